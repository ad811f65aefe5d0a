//! The soak's final check: MongoDB against the source, by two independent routes.
//!
//! 1. **The binlog, read by MariaDB's own `mariadb-binlog`** (not by sdl's decoder, not from its
//!    WAL): every transaction's GTID, its row events (`### INSERT/UPDATE/DELETE` lines of
//!    `--base64-output=decode-rows -v`) and its DDL statements. The change documents must match
//!    it transaction by transaction: as many row documents as row events, the DDL statements word
//!    for word, ordinals `0..n` with `_id` = `<meta.source>/<gtid>:<ordinal>`, no binlog event
//!    stored twice.
//! 2. **The tables themselves**: every table rebuilt by replaying the change documents in commit
//!    order (the ALTERs' DDL documents applied to the rows already there) must equal `SELECT *`
//!    on MariaDB, value for value.
//!
//! **From a snapshot** (`SDL_SOAK_FROM_SNAPSHOT=1`) the tables held rows before sdl first started
//! and sdl read them with `source.snapshot = "initial"`. The snapshot documents
//! (`op: "snapshot"`) are checked on their own ([`snapshot_documents`]: `_id`, key, one snapshot
//! id, no `before`) and not against the binlog (their rows were written before the history
//! checked); the rebuild places each one in commit order right after the transaction its
//! `meta.position` ends with (where sdl wrote it into the WAL) and applies it there, strictly: an
//! image of a row the rebuild already holds must equal it, no row gets two images, no image
//! brings back a row deleted before it, no row written after sdl started gets an image before its
//! insert; an update or delete of a row the rebuild does not hold is accepted only for a row that
//! was there before sdl started and that no document has touched yet (it changed before its
//! chunk was read: its image comes later, or not at all when it is deleted).
//!
//! With a primary and a replica (the soak fails over between them), the history is the current
//! primary's binlog (with `log_slave_updates` it holds every transaction, also those it applied
//! as a replica), and the commit order is its order. `meta.file`/`meta.pos` are coordinates on
//! the server a document was read from, so they are checked against every server's binlog: each
//! document's coordinates must be the start of an event of its own transaction in some server's
//! binlog, and an event (on the servers where its coordinates hold) is stored once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use mongodb::bson::{Bson, Document};
use mysql_async::prelude::Queryable;

use crate::soak::schema::{self, Effect, Kind};

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
    /// Each GTID's place in the binlog: the order the server committed them.
    pub order: HashMap<String, usize>,
    /// (file, start position) of every event → the GTID of the transaction it belongs to.
    pub events: HashMap<(String, i64), String>,
}

/// What to read of a binlog.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Transactions, row events and statements (`-v`), and every event's coordinates.
    History,
    /// Only every event's coordinates and its transaction (faster: no row is printed).
    Coordinates,
}

/// Reads binlog `files` (in the datadir) with `mariadb-binlog`, one file at a time (coordinates
/// are per file). Transactions `skip` says yes to (those before the history checked) count for
/// the coordinates only.
pub fn read_binlog(
    datadir: &Path,
    files: &[String],
    read: Read,
    skip: &dyn Fn(&str) -> bool,
) -> Binlog {
    let mut binlog = Binlog::default();
    for file in files {
        let mut child = Command::new("mariadb-binlog")
            .args(["--no-defaults", "--base64-output=decode-rows"])
            .args((read == Read::History).then_some("-v"))
            .arg(datadir.join(file))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run mariadb-binlog (Debian's mariadb-client-core)");
        parse_binlog(
            BufReader::new(child.stdout.take().unwrap()),
            file,
            skip,
            &mut binlog,
        );
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mariadb-binlog {file} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    binlog
}

/// Parses `mariadb-binlog --base64-output=decode-rows -v` output of binlog `file` into `binlog`.
/// An event starts where the one before it ended (`end_log_pos` of its header; the first, the
/// format description, at 4): the tool prints its `# at` lines in groups, not one per header.
fn parse_binlog(
    output: impl BufRead,
    file: &str,
    skip: &dyn Fn(&str) -> bool,
    binlog: &mut Binlog,
) {
    let mut gtid = String::new();
    let mut skipped = false;
    let mut event_start: i64 = 4;
    // Inside a Query event: the statement's lines so far.
    let mut query: Option<Vec<String>> = None;
    // Row values print as the bytes they are (latin1, binary): not always UTF-8.
    for line in output.split(b'\n') {
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
                if !control && !statement.is_empty() && !skipped {
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
                skipped = skip(&gtid);
                let next = binlog.order.len();
                binlog.order.entry(gtid.clone()).or_insert(next);
            } else if line.contains("\tQuery\t") {
                query = Some(Vec::new());
            }
            let end = line
                .split_once(" end_log_pos ")
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<i64>().ok());
            if let Some(end) = end {
                binlog
                    .events
                    .insert((file.to_string(), event_start), gtid.clone());
                event_start = end;
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
        if let Some((table, op)) = row.filter(|_| !skipped) {
            binlog.rows += 1;
            binlog.transactions.entry(gtid.clone()).or_default().0 += 1;
            if let Some(table) = table.strip_prefix("`app`.`") {
                let table = table.trim_end_matches('`').to_string();
                *binlog.ops.entry((table, op)).or_default() += 1;
                binlog.app_rows += 1;
            }
        }
    }
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
    /// Snapshot documents per table.
    pub snapshot_documents: BTreeMap<String, u64>,
    /// The snapshot ids the snapshot documents carry.
    pub snapshot_ids: BTreeSet<String>,
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

/// Sorts change documents in the order their transactions are in `binlog` (the commit order;
/// `meta.file`/`meta.pos` only order documents read from one server), each transaction's by
/// ordinal. Documents of a transaction the binlog lacks go last (`against_binlog` reports them).
/// A snapshot document goes right after the transaction its `meta.position` ends with (see
/// [`snapshot_place`]).
pub fn commit_order(docs: &mut [Document], binlog: &Binlog) {
    docs.sort_by_cached_key(|d| {
        if d.get_str("op") == Ok("snapshot") {
            let (order, gtid) = snapshot_place(d, binlog).unwrap_or((usize::MAX, String::new()));
            let id = d.get_str("_id").unwrap_or_default().to_string();
            return (order, gtid, i64::MAX, id);
        }
        let m = meta(d);
        let gtid = m.get_str("gtid").unwrap_or_default();
        (
            binlog.order.get(gtid).copied().unwrap_or(usize::MAX),
            gtid.to_string(),
            m.get_i64("row").unwrap_or(-1),
            String::new(),
        )
    });
}

/// Where a snapshot document sits in commit order: after the last transaction (in `binlog`'s
/// order) of its `meta.position` (a GTID position: the ingester's position when it wrote the
/// chunk, every transaction in it before the chunk in the WAL), as (its place, its GTID).
/// `None` when the position names no transaction of the binlog.
pub fn snapshot_place(d: &Document, binlog: &Binlog) -> Option<(usize, String)> {
    let position = meta(d).get_str("position").ok()?;
    // Only the GTID position (a suffix after `;` would be sdl's own progress, not a position).
    let position = position.split(';').next().unwrap_or_default();
    position
        .split(',')
        .map(str::trim)
        .filter_map(|gtid| Some((*binlog.order.get(gtid)?, gtid.to_string())))
        .max()
}

/// Checks each snapshot document on its own: `op: "snapshot"` with an `after` image and no
/// `before`, `_id` = `<meta.source>/snapshot/<meta.snapshot>/<db>/<table>/[<id>]`, `meta.pk` the
/// image's key, a snapshot id of the documented form, one snapshot id in all, and a
/// `meta.position` that places it among the binlog's transactions.
pub fn snapshot_documents(docs: &[Document], binlog: &Binlog, findings: &mut Findings) {
    for d in docs {
        let m = meta(d);
        let id = d.get_str("_id").unwrap_or_default();
        let source = m.get_str("source").unwrap_or_default();
        let snapshot = m.get_str("snapshot").unwrap_or_default().to_string();
        let db = m.get_str("db").unwrap_or_default();
        let table = m.get_str("tbl").unwrap_or_default().to_string();
        let Ok(after) = d.get_document("after") else {
            findings.problem(format!("snapshot document without an after image: {d}"));
            continue;
        };
        let key = id_text(after.get("id"));
        let expected = format!("{source}/snapshot/{snapshot}/{db}/{table}/[{key}]");
        if source.is_empty() || id != expected {
            findings.problem(format!(
                "snapshot document _id {id}, expected {expected}: {d}"
            ));
        }
        if d.contains_key("before") {
            findings.problem(format!("snapshot document with a before image: {d}"));
        }
        match m.get_document("pk") {
            Ok(pk) if pk.len() == 1 && id_text(pk.get("id")) == key => {}
            _ => findings.problem(format!(
                "snapshot document {id}: meta.pk is not {{id: {key}}}"
            )),
        }
        // `YYYYMMDDTHHMMSS.mmmZ`, the UTC time the snapshot was asked for.
        let form = snapshot.len() == 20
            && snapshot.char_indices().all(|(i, c)| match i {
                8 => c == 'T',
                15 => c == '.',
                19 => c == 'Z',
                _ => c.is_ascii_digit(),
            });
        if !form {
            findings.problem(format!(
                "snapshot document {id}: snapshot id {snapshot:?} is not YYYYMMDDTHHMMSS.mmmZ"
            ));
        }
        if db != "app" {
            findings.problem(format!("snapshot document of a table not selected: {d}"));
        }
        if snapshot_place(d, binlog).is_none() {
            findings.problem(format!(
                "snapshot document {id}: meta.position {:?} names no transaction of the binlog",
                m.get_str("position").unwrap_or_default()
            ));
        }
        *findings.snapshot_documents.entry(table).or_default() += 1;
        findings.snapshot_ids.insert(snapshot);
    }
    if findings.snapshot_ids.len() > 1 {
        findings.problem(format!(
            "one initial snapshot, but the snapshot documents carry {} snapshot ids: {:?}",
            findings.snapshot_ids.len(),
            findings.snapshot_ids
        ));
    }
}

/// Checks the change documents against `binlog` (the history) and their coordinates against
/// every server's binlog in `servers` (the history's among them).
pub fn against_binlog(
    docs: &[Document],
    binlog: &Binlog,
    servers: &[&Binlog],
    findings: &mut Findings,
) {
    let mut per_gtid: BTreeMap<String, (u64, Vec<String>, Vec<i64>)> = BTreeMap::new();
    let mut events = BTreeSet::new();
    let mut ops: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
    for d in docs {
        let m = meta(d);
        let gtid = m.get_str("gtid").unwrap_or_default().to_string();
        let row = m.get_i64("row").unwrap_or(-1);
        let id = d.get_str("_id").unwrap_or_default();
        let source = m.get_str("source").unwrap_or_default();
        if source.is_empty() || id != format!("{source}/{gtid}:{row}") {
            findings.problem(format!(
                "_id {id} is not <meta.source>/<gtid>:<ordinal> of {d}"
            ));
        }
        // The servers where this document's coordinates are an event of its transaction: the
        // one it was read from among them (two servers may hold it at the same coordinates).
        let coordinates = (
            m.get_str("file").unwrap_or_default().to_string(),
            m.get_i64("pos").unwrap_or(-1),
        );
        let read_from: Vec<usize> = servers
            .iter()
            .enumerate()
            .filter(|(_, server)| server.events.get(&coordinates) == Some(&gtid))
            .map(|(i, _)| i)
            .collect();
        if read_from.is_empty() {
            findings.problem(format!(
                "{id}: {}:{} is not an event of transaction {gtid} in any server's binlog",
                coordinates.0, coordinates.1
            ));
        }
        let event = (read_from, coordinates, row);
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
                // Passwords in statement text are redacted before the WAL (docs/operations.md,
                // "Secrets in statements"; every form is checked in tests/statement_secrets.rs):
                // the binlog's text is compared after the same documented redaction, word for
                // word otherwise.
                let binlog_statements: Vec<String> = binlog_statements
                    .iter()
                    .map(|s| sdl::redact::redact_statement(s).into_owned())
                    .collect();
                if binlog_statements != statements {
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

/// Replays the `app` change documents (and snapshot documents) in commit order into tables,
/// applying each ALTER's effect on the rows already there when its DDL document comes.
/// `first_ids`: each table held the ids below this one when sdl first started (the soak from a
/// snapshot; empty: every table started empty).
pub fn rebuild(
    docs: &[Document],
    first_ids: &BTreeMap<&'static str, i64>,
    findings: &mut Findings,
) -> BTreeMap<String, Rebuilt> {
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
    // Per table: the ids some document wrote or removed, and those that got a snapshot image.
    let mut touched: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut imaged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
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
        // Was the row there before sdl started, untouched by any document so far?
        let first_id = first_ids.get(table).copied().unwrap_or(1);
        let touched = touched.entry(table.to_string()).or_default();
        let untouched_before_start = |key: &str, touched: &BTreeSet<String>| {
            key.parse::<i64>().is_ok_and(|id| id < first_id) && !touched.contains(key)
        };
        if op == "snapshot" {
            let after = image(d, "after");
            let key = id_text(after.get("id"));
            let imaged = imaged.entry(table.to_string()).or_default();
            if !imaged.insert(key.clone()) {
                findings.problem(format!(
                    "app.{table} id {key}: a second snapshot image: {d}"
                ));
            }
            match rows.get(&key) {
                Some(old) if *old != after => findings.problem(format!(
                    "app.{table} id {key}: snapshot image {after:?} differs from the row rebuilt at its place in commit order {old:?}"
                )),
                Some(_) => {}
                None if touched.contains(&key) => findings.problem(format!(
                    "app.{table} id {key}: snapshot image of a row deleted before it: {d}"
                )),
                None if !untouched_before_start(&key, touched) => findings.problem(format!(
                    "app.{table} id {key}: snapshot image of a row written after sdl started, before its insert: {d}"
                )),
                None => {}
            }
            touched.insert(key.clone());
            rows.insert(key, after);
            continue;
        }
        if op == "update" || op == "delete" {
            let before = image(d, "before");
            let key = id_text(before.get("id"));
            let before_start = untouched_before_start(&key, touched);
            match rows.remove(&key) {
                // A row of the snapshot that changed before its chunk was read.
                None if before_start => {}
                None => findings.problem(format!("{op} of a row not there: {d}")),
                Some(old) if old != before => findings.problem(format!(
                    "app.{table} id {key}: before image {before:?} differs from the row rebuilt so far {old:?}"
                )),
                Some(_) => {}
            }
            touched.insert(key);
        }
        if op == "insert" || op == "update" {
            let after = image(d, "after");
            let key = id_text(after.get("id"));
            touched.insert(key.clone());
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

#[cfg(test)]
mod tests {
    use mongodb::bson::doc;

    use super::*;

    fn change(
        gtid: &str,
        row: i64,
        pos: i64,
        op: &str,
        before: Option<i64>,
        after: Option<i64>,
    ) -> Document {
        let mut d = doc! {
            "_id": format!("soak/{gtid}:{row}"),
            "op": op,
            "meta": { "source": "soak", "db": "app", "tbl": "ints", "gtid": gtid, "file": "mariadb-bin.000001", "pos": pos, "row": row },
        };
        if let Some(id) = before {
            d.insert("before", doc! { "id": id, "i": 1_i64 });
        }
        if let Some(id) = after {
            d.insert("after", doc! { "id": id, "i": 1_i64 });
        }
        d
    }

    /// The same change read from another server: other coordinates.
    fn read_at(mut d: Document, file: &str, pos: i64) -> Document {
        let meta = d.get_document_mut("meta").unwrap();
        meta.insert("file", file);
        meta.insert("pos", pos);
        d
    }

    /// A history of `transactions` (GTID, row events) in commit order.
    fn binlog(transactions: &[(&str, u64)]) -> Binlog {
        let mut b = Binlog::default();
        for (gtid, rows) in transactions {
            b.transactions.insert(gtid.to_string(), (*rows, Vec::new()));
            b.order.insert(gtid.to_string(), b.order.len());
            b.rows += rows;
        }
        b
    }

    type Events = HashMap<(String, i64), String>;

    /// One server holding every event at the coordinates the documents carry.
    fn events_of(docs: &[Document]) -> Events {
        docs.iter()
            .map(|d| {
                let m = meta(d);
                (
                    (
                        m.get_str("file").unwrap().to_string(),
                        m.get_i64("pos").unwrap(),
                    ),
                    m.get_str("gtid").unwrap().to_string(),
                )
            })
            .collect()
    }

    fn event(file: &str, pos: i64, gtid: &str) -> ((String, i64), String) {
        ((file.to_string(), pos), gtid.to_string())
    }

    /// The documents were all read from the server whose binlog is the history.
    fn problems(docs: &[Document], binlog: &Binlog) -> Vec<String> {
        problems_on(docs, binlog, vec![events_of(docs)])
    }

    /// `servers` hold those events; the first one's binlog is the history.
    fn problems_on(docs: &[Document], binlog: &Binlog, servers: Vec<Events>) -> Vec<String> {
        let mut findings = Findings::default();
        let mut binlog_ops = BTreeMap::new();
        for d in docs {
            let op = match d.get_str("op").unwrap() {
                "insert" => "insert",
                "update" => "update",
                _ => "delete",
            };
            *binlog_ops.entry(("ints".to_string(), op)).or_default() += 1;
        }
        let mut servers: Vec<Binlog> = servers
            .into_iter()
            .map(|events| Binlog {
                events,
                ..Default::default()
            })
            .collect();
        let history = Binlog {
            ops: binlog_ops,
            transactions: binlog.transactions.clone(),
            rows: binlog.rows,
            order: binlog.order.clone(),
            events: std::mem::take(&mut servers[0].events),
            ..Default::default()
        };
        let all: Vec<&Binlog> = std::iter::once(&history).chain(&servers[1..]).collect();
        against_binlog(docs, &history, &all, &mut findings);
        let mut docs = docs.to_vec();
        commit_order(&mut docs, &history);
        rebuild(&docs, &BTreeMap::new(), &mut findings);
        findings.problems
    }

    /// Real `mariadb-binlog` output (MariaDB 10.11), shortened.
    const TOOL_OUTPUT: &str = r#"# at 456
#261126  4:13:20 server id 1  end_log_pos 499 CRC32 0xe476cea9 	GTID 0-1-2 ddl
/*M!100001 SET @@session.gtid_seq_no=2*//*!*/;
# at 499
#261126  4:13:20 server id 1  end_log_pos 621 CRC32 0xb77ae65f 	Query	thread_id=5	exec_time=0	error_code=0	xid=7
use `app`/*!*/;
SET TIMESTAMP=1795666400/*!*/;
CREATE TABLE app.m (id INT PRIMARY KEY, j JSON)
/*!*/;
# at 1274
#261126  4:13:24 server id 1  end_log_pos 1316 CRC32 0x813b4141 	GTID 0-1-5 cid=12 trans
/*M!100001 SET @@session.gtid_seq_no=5*//*!*/;
START TRANSACTION
/*!*/;
#261126  4:13:24 server id 1  end_log_pos 1384 CRC32 0x57da5529 	Annotate_rows:
#Q> INSERT INTO b SELECT seq, seq FROM seq_1_to_2
#261126  4:13:24 server id 1  end_log_pos 1441 CRC32 0x7ef282b2 	Table_map: `app`.`b` mapped to number 24
#261126  4:13:24 server id 1  end_log_pos 1513 CRC32 0xd271c564 	Write_rows: table id 24 flags: STMT_END_F
### INSERT INTO `app`.`b`
### SET
###   @1=1
### INSERT INTO `app`.`b`
### SET
###   @1=2
#261126  4:13:24 server id 1  end_log_pos 1758 CRC32 0xf739422b 	Update_rows: table id 24 flags: STMT_END_F
### UPDATE `app`.`b`
### WHERE
###   @1=1
### SET
###   @1=11
#261126  4:13:24 server id 1  end_log_pos 1981 CRC32 0xd0240966 	Delete_rows: table id 24 flags: STMT_END_F
### DELETE FROM `app`.`b`
### WHERE
###   @1=2
# Number of rows: 1
#261126  4:13:24 server id 1  end_log_pos 2012 CRC32 0x32d8eaad 	Xid = 20
COMMIT/*!*/;
# at 2012
#261126  4:13:24 server id 1  end_log_pos 2054 CRC32 0x31f36802 	GTID 0-1-8 ddl
/*M!100001 SET @@session.gtid_seq_no=8*//*!*/;
# at 2054
#261126  4:13:24 server id 1  end_log_pos 2173 CRC32 0x84fc4410 	Query	thread_id=8	exec_time=0	error_code=0	xid=21
SET TIMESTAMP=1795666404/*!*/;
ALTER TABLE app.b ADD COLUMN x INT DEFAULT 5
/*!*/;
DELIMITER ;
# End of log file
"#;

    /// Real `mariadb-binlog --base64-output=decode-rows` output (MariaDB 10.11, no `-v`), whole
    /// but for some session `SET` lines: the event coordinates are exact.
    const COORDINATES_OUTPUT: &str = r#"DELIMITER /*!*/;
# at 4
#261127 16:05:40 server id 1  end_log_pos 256 CRC32 0x730c825a 	Start: binlog v 4, server v 10.11.19-MariaDB-0+deb12u1-log created 261127 16:05:40 at startup
# Warning: this binlog is either in use or was not closed properly.
ROLLBACK/*!*/;
# at 256
#261127 16:05:40 server id 1  end_log_pos 285 CRC32 0x1767de3f 	Gtid list []
# at 285
#261127 16:05:40 server id 1  end_log_pos 330 CRC32 0xcc56aba4 	Binlog checkpoint mariadb-bin.000001
# at 330
#261127 16:05:44 server id 1  end_log_pos 372 CRC32 0x66c66ca5 	GTID 0-1-1 ddl
/*M!100001 SET @@session.gtid_seq_no=1*//*!*/;
# at 372
#261127 16:05:44 server id 1  end_log_pos 457 CRC32 0xe744a7da 	Query	thread_id=4	exec_time=0	error_code=0	xid=0
SET TIMESTAMP=1795795544/*!*/;
SET @@session.collation_database=DEFAULT/*!*/;
create database app
/*!*/;
# at 457
#261127 16:05:44 server id 1  end_log_pos 499 CRC32 0xa6ea2717 	GTID 0-1-2 ddl
/*M!100001 SET @@session.gtid_seq_no=2*//*!*/;
# at 499
#261127 16:05:44 server id 1  end_log_pos 625 CRC32 0x5e1a7eee 	Query	thread_id=4	exec_time=0	error_code=0	xid=2
SET TIMESTAMP=1795795544/*!*/;
create table app.b (id int primary key, v varchar(10))
/*!*/;
# at 625
#261127 16:05:44 server id 1  end_log_pos 667 CRC32 0x939b5ece 	GTID 0-1-3 trans
/*M!100001 SET @@session.gtid_seq_no=3*//*!*/;
START TRANSACTION
/*!*/;
# at 667
# at 730
#261127 16:05:44 server id 1  end_log_pos 730 CRC32 0x69228b89 	Annotate_rows:
#Q> insert into app.b values (1,'a'),(2,'b')
#261127 16:05:44 server id 1  end_log_pos 792 CRC32 0x78ac1ec4 	Table_map: `app`.`b` mapped to number 18
# at 792
#261127 16:05:44 server id 1  end_log_pos 839 CRC32 0xfefd606d 	Write_rows: table id 18 flags: STMT_END_F
# Number of rows: 2
# at 839
#261127 16:05:44 server id 1  end_log_pos 870 CRC32 0xeb19bdb2 	Xid = 3
COMMIT/*!*/;
# at 870
#261127 16:05:44 server id 1  end_log_pos 912 CRC32 0x41669546 	GTID 0-1-4 trans
/*M!100001 SET @@session.gtid_seq_no=4*//*!*/;
START TRANSACTION
/*!*/;
# at 912
# at 968
#261127 16:05:44 server id 1  end_log_pos 968 CRC32 0xf77e90e4 	Annotate_rows:
#Q> update app.b set v='c' where id=1
#261127 16:05:44 server id 1  end_log_pos 1030 CRC32 0xf4c8b829 	Table_map: `app`.`b` mapped to number 18
# at 1030
#261127 16:05:44 server id 1  end_log_pos 1078 CRC32 0xc6dbbad6 	Update_rows: table id 18 flags: STMT_END_F
# Number of rows: 1
# at 1078
# at 1129
#261127 16:05:44 server id 1  end_log_pos 1129 CRC32 0xea36bf66 	Annotate_rows:
#Q> delete from app.b where id=2
#261127 16:05:44 server id 1  end_log_pos 1191 CRC32 0x31d3cac8 	Table_map: `app`.`b` mapped to number 18
# at 1191
#261127 16:05:44 server id 1  end_log_pos 1231 CRC32 0x33f84c5a 	Delete_rows: table id 18 flags: STMT_END_F
# Number of rows: 1
# at 1231
#261127 16:05:44 server id 1  end_log_pos 1262 CRC32 0xe02f43b9 	Xid = 5
COMMIT/*!*/;
DELIMITER ;
# End of log file
"#;

    #[test]
    fn event_coordinates_and_commit_order_are_parsed_and_skipped_transactions_left_out() {
        let mut b = Binlog::default();
        let file = "mariadb-bin.000001";
        parse_binlog(
            COORDINATES_OUTPUT.as_bytes(),
            file,
            &|gtid| gtid == "0-1-1",
            &mut b,
        );
        let at = |pos: i64| b.events.get(&(file.to_string(), pos)).map(String::as_str);
        // Where sdl's documents point: the Query event of a DDL statement, the rows events.
        assert_eq!(at(372), Some("0-1-1"));
        assert_eq!(at(499), Some("0-1-2"));
        assert_eq!(at(792), Some("0-1-3"));
        assert_eq!(at(1030), Some("0-1-4"));
        assert_eq!(at(1191), Some("0-1-4"));
        // Events before the first transaction belong to none; no event starts mid-event.
        assert_eq!(at(4), Some(""));
        assert_eq!(at(800), None);
        let order: Vec<usize> = ["0-1-1", "0-1-2", "0-1-3", "0-1-4"]
            .iter()
            .map(|g| b.order[*g])
            .collect();
        assert_eq!(order, [0, 1, 2, 3]);
        // The skipped transaction (before the history checked) is not history.
        assert!(!b.transactions.contains_key("0-1-1"));
        assert_eq!(b.statements, 1);
        assert_eq!(
            b.transactions["0-1-2"].1,
            ["create table app.b (id int primary key, v varchar(10))"]
        );
    }

    /// A snapshot image of `app.ints` row `id`, written into the WAL at `position`.
    fn snapshot(id: i64, i: i64, position: &str) -> Document {
        let snapshot = "20261127T190102.123Z";
        doc! {
            "_id": format!("soak/snapshot/{snapshot}/app/ints/[{id}]"),
            "op": "snapshot",
            "meta": { "source": "soak", "db": "app", "tbl": "ints", "pk": { "id": id }, "snapshot": snapshot, "position": position },
            "after": { "id": id, "i": i },
        }
    }

    /// The problems of a soak from a snapshot: ids below `first` were there before sdl started.
    fn snapshot_problems(docs: &[Document], binlog: &Binlog, first: i64) -> Vec<String> {
        let mut findings = Findings::default();
        let (snapshots, _): (Vec<Document>, Vec<Document>) = docs
            .iter()
            .cloned()
            .partition(|d| d.get_str("op") == Ok("snapshot"));
        snapshot_documents(&snapshots, binlog, &mut findings);
        let mut docs = docs.to_vec();
        commit_order(&mut docs, binlog);
        rebuild(&docs, &BTreeMap::from([("ints", first)]), &mut findings);
        findings.problems
    }

    #[test]
    fn snapshot_images_are_applied_where_they_were_written() {
        // Row 1 was there before sdl started and changed before its chunk was read (the update
        // comes first, its before image unknown to the rebuild); row 2 was deleted before its
        // chunk; row 3 got its image only; row 10 was inserted after sdl started and then read
        // by the chunk (its image equals the row inserted). The images sit after 0-1-6,
        // whatever order MongoDB returns them in.
        let binlog = binlog(&[("0-1-5", 2), ("0-1-6", 1), ("0-1-7", 1)]);
        let docs = [
            snapshot(3, 1, "0-1-6"),
            change("0-1-7", 0, 300, "update", Some(1), Some(1)),
            change("0-1-5", 0, 100, "update", Some(1), Some(1)),
            change("0-1-5", 1, 100, "delete", Some(2), None),
            change("0-1-6", 0, 200, "insert", None, Some(10)),
            snapshot(1, 1, "0-1-6"),
            snapshot(10, 1, "0-1-6"),
        ];
        assert_eq!(snapshot_problems(&docs, &binlog, 10), Vec::<String>::new());
    }

    #[test]
    fn a_wrong_snapshot_image_is_found() {
        let binlog = binlog(&[("0-1-5", 1), ("0-1-6", 1)]);
        // Row 1's image differs from its state at the image's place (its update came first).
        let docs = [
            change("0-1-5", 0, 100, "update", Some(1), Some(1)),
            snapshot(1, 2, "0-1-6"),
        ];
        let found = snapshot_problems(&docs, &binlog, 10);
        assert!(
            found
                .iter()
                .any(|p| p.contains("snapshot image") && p.contains("differs")),
            "{found:?}"
        );
        // Row 2 was deleted before its image: the image brings it back.
        let docs = [
            change("0-1-5", 0, 100, "delete", Some(2), None),
            snapshot(2, 1, "0-1-6"),
        ];
        let found = snapshot_problems(&docs, &binlog, 10);
        assert!(
            found.iter().any(|p| p.contains("deleted before it")),
            "{found:?}"
        );
        // Row 11 was written after sdl started: its image before its insert is out of order.
        let docs = [
            snapshot(11, 1, "0-1-5"),
            change("0-1-6", 0, 200, "insert", None, Some(11)),
        ];
        let found = snapshot_problems(&docs, &binlog, 10);
        assert!(
            found.iter().any(|p| p.contains("before its insert")),
            "{found:?}"
        );
        // Two images of one row; an image at a position the binlog does not hold.
        let docs = [snapshot(3, 1, "0-1-5"), snapshot(3, 1, "0-1-9")];
        let found = snapshot_problems(&docs, &binlog, 10);
        assert!(
            found.iter().any(|p| p.contains("second snapshot image")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("names no transaction")),
            "{found:?}"
        );
    }

    #[test]
    fn binlog_output_is_parsed() {
        let mut b = Binlog::default();
        parse_binlog(
            TOOL_OUTPUT.as_bytes(),
            "mariadb-bin.000001",
            &|_| false,
            &mut b,
        );
        assert_eq!(b.rows, 4);
        assert_eq!(b.app_rows, 4);
        assert_eq!(b.statements, 2);
        assert_eq!(
            b.transactions["0-1-2"],
            (
                0,
                vec!["CREATE TABLE app.m (id INT PRIMARY KEY, j JSON)".to_string()]
            )
        );
        assert_eq!(b.transactions["0-1-5"], (4, Vec::new()));
        assert_eq!(
            b.transactions["0-1-8"],
            (
                0,
                vec!["ALTER TABLE app.b ADD COLUMN x INT DEFAULT 5".to_string()]
            )
        );
        let ops: Vec<_> = b
            .ops
            .iter()
            .map(|((t, op), n)| (t.as_str(), *op, *n))
            .collect();
        assert_eq!(
            ops,
            [("b", "delete", 1), ("b", "insert", 2), ("b", "update", 1)]
        );
    }

    #[test]
    fn matching_documents_pass() {
        let docs = [
            change("0-1-5", 0, 100, "insert", None, Some(1)),
            change("0-1-5", 1, 100, "insert", None, Some(2)),
            change("0-1-6", 0, 200, "update", Some(1), Some(3)),
        ];
        assert_eq!(
            problems(&docs, &binlog(&[("0-1-5", 2), ("0-1-6", 1)])),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_lost_change_is_found() {
        let docs = [change("0-1-5", 0, 100, "insert", None, Some(1))];
        let found = problems(&docs, &binlog(&[("0-1-5", 2)]));
        assert!(
            found
                .iter()
                .any(|p| p.contains("1 row documents, 2 row events")),
            "{found:?}"
        );
    }

    #[test]
    fn a_lost_transaction_is_found() {
        let docs = [change("0-1-5", 0, 100, "insert", None, Some(1))];
        let found = problems(&docs, &binlog(&[("0-1-5", 1), ("0-1-6", 1)]));
        assert!(
            found
                .iter()
                .any(|p| p.contains("0-1-6") && p.contains("not in MongoDB")),
            "{found:?}"
        );
    }

    #[test]
    fn a_change_stored_twice_is_found() {
        // The same binlog event under two ordinals (a duplicate a unique _id cannot catch).
        let docs = [
            change("0-1-5", 0, 100, "insert", None, Some(1)),
            change("0-1-5", 1, 100, "insert", None, Some(2)),
            change("0-1-5", 1, 100, "insert", None, Some(2)),
        ];
        let found = problems(&docs, &binlog(&[("0-1-5", 2)]));
        assert!(
            found.iter().any(|p| p.contains("stored twice")),
            "{found:?}"
        );
        assert!(found.iter().any(|p| p.contains("ordinals")), "{found:?}");
    }

    #[test]
    fn an_update_of_a_row_never_inserted_is_found() {
        let docs = [change("0-1-6", 0, 200, "update", Some(9), Some(3))];
        let found = problems(&docs, &binlog(&[("0-1-6", 1)]));
        assert!(
            found
                .iter()
                .any(|p| p.contains("update of a row not there")),
            "{found:?}"
        );
    }

    #[test]
    fn documents_read_from_two_servers_pass_in_commit_order() {
        // 0-1-5 was read from the first primary, at coordinates that come after those of 0-2-6,
        // read from the promoted replica (its own binlog, where 0-1-5 sits elsewhere). Ordered by
        // coordinates, the update would come before the insert it changes.
        let docs = [
            change("0-1-5", 0, 200, "insert", None, Some(1)),
            change("0-1-5", 1, 200, "insert", None, Some(2)),
            read_at(
                change("0-2-6", 0, 0, "update", Some(1), Some(3)),
                "mariadb-bin.000001",
                100,
            ),
        ];
        let first = Events::from([event("mariadb-bin.000001", 200, "0-1-5")]);
        let promoted = Events::from([
            event("mariadb-bin.000001", 60, "0-1-5"),
            event("mariadb-bin.000001", 100, "0-2-6"),
        ]);
        assert_eq!(
            problems_on(
                &docs,
                &binlog(&[("0-1-5", 2), ("0-2-6", 1)]),
                vec![promoted, first]
            ),
            Vec::<String>::new()
        );
    }

    #[test]
    fn coordinates_of_another_transaction_are_found() {
        // Two transactions claim the same event: one of them is not what is stored there.
        let docs = [
            change("0-1-5", 0, 100, "insert", None, Some(1)),
            change("0-1-6", 0, 100, "insert", None, Some(2)),
        ];
        let found = problems_on(
            &docs,
            &binlog(&[("0-1-5", 1), ("0-1-6", 1)]),
            vec![Events::from([
                event("mariadb-bin.000001", 100, "0-1-5"),
                event("mariadb-bin.000001", 300, "0-1-6"),
            ])],
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("not an event of transaction 0-1-6")),
            "{found:?}"
        );
        assert_eq!(found.len(), 1, "{found:?}");
    }

    #[test]
    fn coordinates_on_no_server_are_found() {
        let docs = [read_at(
            change("0-1-5", 0, 0, "insert", None, Some(1)),
            "mariadb-bin.000009",
            4,
        )];
        let found = problems_on(
            &docs,
            &binlog(&[("0-1-5", 1)]),
            vec![
                Events::from([event("mariadb-bin.000001", 100, "0-1-5")]),
                Events::from([event("mariadb-bin.000002", 100, "0-1-5")]),
            ],
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("mariadb-bin.000009:4 is not an event")),
            "{found:?}"
        );
    }
}
