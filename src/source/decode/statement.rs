//! Query events: BEGIN, COMMIT, savepoints, XA, and statements (DDL) recorded as changes.
//!
//! Guarantee: a row change logged as a statement (INSERT/UPDATE/DELETE/REPLACE/LOAD DATA or
//! CREATE TABLE ... SELECT in a Query event: the session used binlog_format STATEMENT or MIXED)
//! is an error naming the transaction's GTID in a live stream: its rows cannot be reconstructed,
//! so it is never recorded as a statement ([`statement_row_change`]). `SAVEPOINT` / `ROLLBACK TO
//! SAVEPOINT` / `RELEASE SAVEPOINT` inside a transaction are passed over: their effect is already
//! in the row events that follow them.

use mysql_async::binlog::events::Event;

use super::assembler::TransactionAssembler;
use super::{shorten, AssemblerMode, DecodeError};
use crate::event::{Change, SourceTransaction, StatementChange};

impl TransactionAssembler {
    pub(super) fn on_query(
        &mut self,
        event: &Event,
        event_start: u64,
        schema: String,
        text: String,
    ) -> Result<Option<SourceTransaction>, DecodeError> {
        let keyword = text.trim().to_ascii_uppercase();
        if keyword == "BEGIN" {
            if self.open.is_none() && self.mode == AssemblerMode::File {
                self.begin_anonymous(event, event_start, false)?;
            }
            if let Some(open) = &mut self.open {
                // MySQL: BEGIN means a multi-statement transaction ending with XID or COMMIT.
                open.standalone = false;
            }
            return Ok(None);
        }
        if self.open.as_ref().is_some_and(|open| !open.standalone) && is_savepoint(&keyword) {
            // Savepoints inside a transaction carry no data: the row events written after a
            // ROLLBACK TO SAVEPOINT are the changes that stayed.
            return Ok(None);
        }
        if keyword == "COMMIT" || keyword == "ROLLBACK" {
            // Non-transactional engines end their event group with a COMMIT (or, for changes that
            // could not be rolled back, ROLLBACK) query; the changes in it are in the binlog.
            return self.commit(event);
        }
        if keyword.starts_with("XA ") {
            return Err(self.error(
                event,
                "QUERY",
                format!("XA statement `{text}` is not supported"),
            ));
        }
        // Live streams only: historic files (File mode) predate row-based logging as often as
        // not, and are decoded leniently, their statements recorded as they are.
        if let Some(kind) = statement_row_change(&text).filter(|_| self.mode == AssemblerMode::Live)
        {
            let gtid = match &self.open {
                Some(open) => format!("transaction {}", open.gtid),
                None => "a transaction without GTID".into(),
            };
            return Err(self.error(
                event,
                "QUERY",
                format!(
                    "{gtid} holds a row change logged as a statement ({kind}: `{}`): the session \
                     that ran it used binlog_format=STATEMENT or MIXED, so the binlog has no row \
                     images and the changed rows cannot be reconstructed. Nothing from this \
                     transaction on was relayed. Fix the source: set binlog_format=ROW in its \
                     configuration and with SET GLOBAL, and keep sessions from overriding it \
                     (SET SESSION binlog_format needs SUPER or BINLOG ADMIN). This transaction's \
                     changes must then be brought to MongoDB by other means: re-seed by starting \
                     sdl with an empty WAL directory and source.start set to a GTID position \
                     after it",
                    shorten(&text)
                ),
            ));
        }
        if self.open.is_none() && self.mode == AssemblerMode::File {
            self.begin_anonymous(event, event_start, true)?;
        }
        let file = self.file.to_string();
        let fragment = self.full_fragment();
        let Some(open) = &mut self.open else {
            return Err(self.error(
                event,
                "QUERY",
                format!("statement outside a GTID transaction: `{}`", shorten(&text)),
            ));
        };
        open.push(Change::Statement(StatementChange {
            database: schema,
            statement: text,
            file,
            pos: event_start,
        }));
        if open.standalone {
            // A standalone group has only this statement, so no fragment was taken before it.
            return self.commit(event);
        }
        Ok(fragment)
    }
}

/// What kind of row change `statement` is, when it is one: a DML statement (INSERT, UPDATE,
/// DELETE, REPLACE, LOAD DATA/XML, one of those after a `WITH` clause) or a `CREATE TABLE ...
/// SELECT`, which only appear as statement text in the binlog when the session logged in
/// STATEMENT or MIXED format (in ROW format their rows are row events, and CREATE ... SELECT is
/// logged as a plain CREATE TABLE). `None` for DDL and anything else. Comments and whitespace in
/// front are skipped; executable comments (`/*!50100 ... */`, `/*M!100100 ... */`) count as
/// their content.
pub fn statement_row_change(statement: &str) -> Option<&'static str> {
    let words = top_level_words(statement);
    let first = words.first()?.0.as_str();
    let dml = |w: &str| matches!(w, "INSERT" | "UPDATE" | "DELETE" | "REPLACE");
    match first {
        w if dml(w) => Some("DML statement"),
        "LOAD" if words.get(1).is_some_and(|(w, _)| w == "DATA" || w == "XML") => Some("LOAD DATA"),
        // `WITH cte AS (...) UPDATE/DELETE ...`: the statement's verb is the first top-level
        // word after the common table expressions.
        "WITH" if words.iter().any(|(w, depth)| *depth == 0 && dml(w)) => Some("DML statement"),
        "CREATE" => {
            let table = words
                .iter()
                .skip(1)
                .map(|(w, _)| w.as_str())
                .find(|w| !matches!(*w, "OR" | "REPLACE" | "TEMPORARY"));
            (table == Some("TABLE") && words.iter().any(|(w, _)| w == "SELECT"))
                .then_some("CREATE TABLE ... SELECT")
        }
        _ => None,
    }
}

/// The words of a statement in upper case, each with its parenthesis depth, outside comments,
/// string literals and quoted identifiers.
fn top_level_words(statement: &str) -> Vec<(String, usize)> {
    let bytes = statement.as_bytes();
    let mut words = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match c {
            b'/' if next == Some(b'*') => {
                let rest = &bytes[i + 2..];
                let executable = rest.first() == Some(&b'!')
                    || (rest.first() == Some(&b'M') && rest.get(1) == Some(&b'!'));
                if executable {
                    // Read the content; its closing `*/` is skipped below.
                    i += 2 + if rest[0] == b'M' { 2 } else { 1 };
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                } else {
                    i = statement[i + 2..]
                        .find("*/")
                        .map_or(bytes.len(), |end| i + 2 + end + 2);
                }
            }
            b'*' if next == Some(b'/') => i += 2,
            b'#' => {
                i = statement[i..]
                    .find('\n')
                    .map_or(bytes.len(), |end| i + end + 1);
            }
            b'-' if next == Some(b'-')
                && bytes.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = statement[i..]
                    .find('\n')
                    .map_or(bytes.len(), |end| i + end + 1);
            }
            b'\'' | b'"' | b'`' => {
                let quote = c;
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 2;
                    } else if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                    i += 1;
                }
                words.push((statement[start..i].to_ascii_uppercase(), depth));
            }
            _ => i += 1,
        }
    }
    words
}

pub(super) fn is_savepoint(keyword: &str) -> bool {
    keyword.starts_with("SAVEPOINT ")
        || keyword.starts_with("RELEASE SAVEPOINT ")
        || (keyword.starts_with("ROLLBACK ")
            && keyword["ROLLBACK ".len()..].trim_start().starts_with("TO "))
        || keyword.starts_with("ROLLBACK WORK TO ")
}
