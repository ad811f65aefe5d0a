//! The soak's final check: MongoDB against the source, by two independent routes.
//!
//! 1. **The binlog, read by MariaDB's own `mariadb-binlog`** (not by sdl's decoder, not from its
//!    WAL): every transaction's GTID, its row events (`### INSERT/UPDATE/DELETE` lines of
//!    `--base64-output=decode-rows -v`) and its DDL statements. The change documents must match
//!    it transaction by transaction: as many row documents as row events, the DDL statements word
//!    for word, ordinals `0..n` with `_id` = `<gtid>:<ordinal>`, no binlog event stored twice.
//! 2. **The tables themselves**: every table rebuilt by replaying the change documents in commit
//!    order (the ALTERs' DDL documents applied to the rows already there) must equal `SELECT *`
//!    on MariaDB, value for value.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mongodb::bson::{Bson, Document};
use mysql_async::prelude::Queryable;

use crate::schema::{self, Effect, Kind};

/// What the binlog holds, per GTID.
#[derive(Default)]
pub struct Binlog {
    /// GTID → (row events, DDL statements), for transactions with either.
    pub transactions: BTreeMap<String, (u64, Vec<String>)>,
    /// (table, op) → row events, for `app` tables.
    pub ops: BTreeMap<(String, &'static str), u64>,
    pub rows: u64,
    pub app_rows: u64,
    pub statements: u64,
}

/// Reads binlog `files` (in the datadir) with `mariadb-binlog`.
pub fn read_binlog(datadir: &Path, files: &[String]) -> Binlog {
    let mut child = Command::new("mariadb-binlog")
        .args(["--no-defaults", "--base64-output=decode-rows", "-v"])
        .args(files.iter().map(|f| datadir.join(f)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mariadb-binlog (Debian's mariadb-client-core)");
    let mut binlog = Binlog::default();
    let mut gtid = String::new();
    // Inside a Query event: the statement's lines so far.
    let mut query: Option<Vec<String>> = None;
    let stdout = child.stdout.take().unwrap();
    // Row values print as the bytes they are (latin1, binary): not always UTF-8.
    for line in BufReader::new(stdout).split(b'\n') {
        let line = String::from_utf8_lossy(&line.expect("mariadb-binlog output")).into_owned();
        if let Some(lines) = query.as_mut() {
            // Session context the tool prints before the statement, one line each.
            let context = ["SET ", "use `", "/*!", "/*M!", "DELIMITER"]
                .iter()
                .any(|p| line.starts_with(p));
            let ends = line.ends_with("/*!*/;");
            if !context {
                lines.push(line.trim_end_matches("/*!*/;").to_string());
            }
            if ends && !context || line == "/*!*/;" {
                let statement = lines.join("\n").trim_end().to_string();
                query = None;
                let control = matches!(
                    statement.as_str(),
                    "BEGIN" | "COMMIT" | "ROLLBACK" | "START TRANSACTION"
                ) || statement.starts_with("SAVEPOINT")
                    || statement.starts_with("ROLLBACK TO")
                    || statement.starts_with("RELEASE SAVEPOINT");
                if !control && !statement.is_empty() {
                    binlog.statements += 1;
                    binlog
                        .transactions
                        .entry(gtid.clone())
                        .or_default()
                        .1
                        .push(statement);
                }
            }
            continue;
        }
        if line.starts_with('#') && !line.starts_with("###") {
            if let Some(at) = line.find("\tGTID ") {
                gtid = line[at + 6..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            } else if line.contains("\tQuery\t") {
                query = Some(Vec::new());
            }
            continue;
        }
        let row = [
            ("### INSERT INTO ", "insert"),
            ("### UPDATE ", "update"),
            ("### DELETE FROM ", "delete"),
        ]
        .into_iter()
        .find_map(|(prefix, op)| line.strip_prefix(prefix).map(|table| (table, op)));
        if let Some((table, op)) = row {
            binlog.rows += 1;
            binlog.transactions.entry(gtid.clone()).or_default().0 += 1;
            if let Some(table) = table.strip_prefix("`app`.`") {
                let table = table.trim_end_matches('`').to_string();
                *binlog.ops.entry((table, op)).or_default() += 1;
                binlog.app_rows += 1;
            }
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mariadb-binlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    binlog
}

/// What the check found; `problems` is empty when MongoDB matches the source.
#[derive(Default)]
pub struct Findings {
    pub problems: Vec<String>,
    pub row_documents: u64,
    pub ddl_documents: u64,
    pub alter_documents: u64,
    pub rows_compared: u64,
    pub values_compared: u64,
}

impl Findings {
    fn problem(&mut self, text: String) {
        if self.problems.len() < 200 {
            self.problems.push(text);
        } else if self.problems.len() == 200 {
            self.problems.push("(more problems not listed)".into());
        }
    }
}

fn meta(d: &Document) -> &Document {
    d.get_document("meta").expect("meta")
}

/// Checks the change documents (in commit order) against the binlog.
pub fn against_binlog(docs: &[Document], binlog: &Binlog, findings: &mut Findings) {
    let mut per_gtid: BTreeMap<String, (u64, Vec<String>, Vec<i64>)> = BTreeMap::new();
    let mut events = BTreeSet::new();
    let mut ops: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for d in docs {
        let m = meta(d);
        let gtid = m.get_str("gtid").unwrap_or_default().to_string();
        let row = m.get_i64("row").unwrap_or(-1);
        let id = d.get_str("_id").unwrap_or_default();
        if id != format!("{gtid}:{row}") {
            findings.problem(format!("_id {id} is not <gtid>:<ordinal> of {d}"));
        }
        let event = (
            m.get_str("file").unwrap_or_default().to_string(),
            m.get_i64("pos").unwrap_or(-1),
            row,
        );
        if !events.insert(event.clone()) {
            findings.problem(format!("binlog event {event:?} stored twice: {d}"));
        }
        let entry = per_gtid.entry(gtid).or_default();
        entry.2.push(row);
        match d.get_str("op").unwrap_or_default() {
            op @ ("insert" | "update" | "delete") => {
                findings.row_documents += 1;
                entry.0 += 1;
                if m.get_str("db") == Ok("app") {
                    let op = match op {
                        "insert" => "insert",
                        "update" => "update",
                        _ => "delete",
                    };
                    let table = m.get_str("tbl").unwrap_or_default().to_string();
                    *ops.entry((table, op)).or_default() += 1;
                }
            }
            "ddl" => {
                findings.ddl_documents += 1;
                let statement = d.get_str("statement").unwrap_or_default().to_string();
                if statement.starts_with("ALTER TABLE") {
                    findings.alter_documents += 1;
                }
                entry.1.push(statement);
            }
            other => findings.problem(format!("unknown op {other}: {d}")),
        }
    }
    for (gtid, (rows, statements, mut ordinals)) in per_gtid.clone() {
        ordinals.sort_unstable();
        let expected: Vec<i64> = (0..ordinals.len() as i64).collect();
        if ordinals != expected {
            findings.problem(format!(
                "transaction {gtid}: ordinals {:?}… are not 0..{}",
                &ordinals[..ordinals.len().min(10)],
                ordinals.len()
            ));
        }
        match binlog.transactions.get(&gtid) {
            None => findings.problem(format!(
                "transaction {gtid} is in MongoDB ({rows} rows, {statements:?}) but not in the binlog"
            )),
            Some((binlog_rows, binlog_statements)) => {
                if *binlog_rows != rows {
                    findings.problem(format!(
                        "transaction {gtid}: {rows} row documents, {binlog_rows} row events in the binlog"
                    ));
                }
                if *binlog_statements != statements {
                    findings.problem(format!(
                        "transaction {gtid}: DDL documents {statements:?}, binlog {binlog_statements:?}"
                    ));
                }
            }
        }
    }
    for (gtid, (rows, statements)) in &binlog.transactions {
        if !per_gtid.contains_key(gtid) {
            findings.problem(format!(
                "transaction {gtid} ({rows} row events, {statements:?}) is in the binlog but not in MongoDB"
            ));
        }
    }
    if ops != binlog.ops {
        findings.problem(format!(
            "row documents per (table, op) {ops:?} differ from the binlog's {:?}",
            binlog.ops
        ));
    }
    if findings.row_documents != binlog.rows {
        findings.problem(format!(
            "{} row documents, {} row events in the binlog",
            findings.row_documents, binlog.rows
        ));
    }
    if findings.ddl_documents != binlog.statements {
        findings.problem(format!(
            "{} DDL documents, {} DDL statements in the binlog",
            findings.ddl_documents, binlog.statements
        ));
    }
}

/// A table rebuilt from change documents: canonical id → column → value.
type Rebuilt = BTreeMap<String, BTreeMap<String, Bson>>;

fn id_text(v: Option<&Bson>) -> String {
    match v {
        Some(Bson::Int64(i)) => i.to_string(),
        other => format!("bad id {other:?}"),
    }
}

/// Replays the `app` change documents into tables, applying each ALTER's effect on the rows
/// already there when its DDL document comes.
pub fn rebuild(docs: &[Document], findings: &mut Findings) -> BTreeMap<String, Rebuilt> {
    let alters: BTreeMap<&str, schema::Alter> = schema::alters()
        .into_iter()
        .map(|a| (a.statement, a))
        .collect();
    let mut tables: BTreeMap<String, Rebuilt> = schema::tables()
        .iter()
        .map(|t| (t.name.to_string(), Rebuilt::new()))
        .collect();
    let image = |d: &Document, which: &str| -> BTreeMap<String, Bson> {
        d.get_document(which)
            .map(|i| i.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    for d in docs {
        let m = meta(d);
        let op = d.get_str("op").unwrap_or_default();
        if op == "ddl" {
            if let Some(alter) = alters.get(d.get_str("statement").unwrap_or_default()) {
                let rows = tables.get_mut(alter.table).unwrap();
                for row in rows.values_mut() {
                    match &alter.effect {
                        Effect::Add { column, default } => {
                            row.insert(column.name.to_string(), default.clone());
                        }
                        Effect::Drop { column } => {
                            row.remove(*column);
                        }
                        Effect::Retype { .. } => {}
                    }
                }
            }
            continue;
        }
        if m.get_str("db") != Ok("app") {
            continue;
        }
        let table = m.get_str("tbl").unwrap_or_default();
        let Some(rows) = tables.get_mut(table) else {
            findings.problem(format!("change of an unknown table: {d}"));
            continue;
        };
        if op == "update" || op == "delete" {
            let before = image(d, "before");
            let key = id_text(before.get("id"));
            match rows.remove(&key) {
                None => findings.problem(format!("{op} of a row not there: {d}")),
                Some(old) if old != before => findings.problem(format!(
                    "app.{table} id {key}: before image {before:?} differs from the row rebuilt so far {old:?}"
                )),
                Some(_) => {}
            }
        }
        if op == "insert" || op == "update" {
            let after = image(d, "after");
            let key = id_text(after.get("id"));
            if rows.insert(key.clone(), after).is_some() {
                findings.problem(format!(
                    "app.{table} id {key}: {op} over an existing row: {d}"
                ));
            }
        }
    }
    tables
}

/// Compares every rebuilt table with `SELECT *` on MariaDB, value for value.
pub async fn against_tables(
    conn: &mut mysql_async::Conn,
    rebuilt: &BTreeMap<String, Rebuilt>,
    findings: &mut Findings,
) {
    let mut kinds: BTreeMap<(&str, &str), Kind> = BTreeMap::new();
    for table in schema::tables() {
        kinds.insert(
            (table.name, "id"),
            Kind::Int {
                bits: 64,
                unsigned: false,
            },
        );
        for c in table.columns {
            kinds.insert((table.name, c.name), c.kind);
        }
    }
    for alter in schema::alters() {
        if let Effect::Add { column, .. } = alter.effect {
            kinds.insert((alter.table, column.name), column.kind);
        }
    }
    conn.query_drop("SET time_zone = '+00:00'").await.unwrap();
    for (table, rows) in rebuilt {
        let columns: Vec<String> = conn
            .exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                (table,),
            )
            .await
            .unwrap();
        let column_kinds: Vec<Kind> = columns
            .iter()
            .map(|c| kinds[&(table.as_str(), c.as_str())])
            .collect();
        let select: Vec<String> = columns
            .iter()
            .zip(&column_kinds)
            .map(|(c, k)| match k {
                Kind::Json => format!("JSON_COMPACT(`{c}`)"),
                _ => format!("`{c}`"),
            })
            .collect();
        let source: Vec<mysql_async::Row> = conn
            .exec(format!("SELECT {} FROM app.{table}", select.join(", ")), ())
            .await
            .unwrap();
        let mut seen = BTreeSet::new();
        for row in source {
            let values = row.unwrap();
            let id = schema::source_text(column_kinds[0], &values[0]);
            seen.insert(id.clone());
            let Some(doc_row) = rows.get(&id) else {
                findings.problem(format!("app.{table} id {id} is in MariaDB, not in MongoDB"));
                continue;
            };
            findings.rows_compared += 1;
            let doc_columns: BTreeSet<&str> = doc_row.keys().map(String::as_str).collect();
            let source_columns: BTreeSet<&str> = columns.iter().map(String::as_str).collect();
            if doc_columns != source_columns {
                findings.problem(format!(
                    "app.{table} id {id}: columns {doc_columns:?} rebuilt, {source_columns:?} in MariaDB"
                ));
            }
            for ((name, kind), value) in columns.iter().zip(&column_kinds).zip(&values) {
                findings.values_compared += 1;
                let want = schema::source_text(*kind, value);
                let got = doc_row
                    .get(name)
                    .map(|v| schema::document_text(*kind, v))
                    .unwrap_or_else(|| "(missing)".into());
                if want != got {
                    findings.problem(format!(
                        "app.{table} id {id} column {name}: MariaDB {want:?}, MongoDB {got:?}"
                    ));
                }
            }
        }
        for id in rows.keys().filter(|id| !seen.contains(*id)) {
            findings.problem(format!("app.{table} id {id} is in MongoDB, not in MariaDB"));
        }
    }
}
