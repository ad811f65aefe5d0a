//! `sdl wal ...`: the operator's read-only view of the WAL, and `sdl wal recover` (the one command
//! that changes it: see `walrecover.rs`).
//!
//! Every inspection command works on the WAL directory of a stopped service (opened directly) and on a
//! running one (sled holds an exclusive lock, so the command asks the service's admin endpoint,
//! which answers with the very same functions below). Output is a human-readable table, or JSON
//! with `--json`. Reading never changes records; opening a stopped WAL applies the same metadata
//! repairs and format upgrade `sdl run` would (sdl_wal's header), and says so on stderr.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Subcommand;
use sdl_wal::{Stored, Wal, WalStats};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::event::{Change, RowOp, SourceTransaction, StatementChange, Value};

#[derive(Subcommand, Debug, Clone)]
pub enum WalCommand {
    /// First/last sequence, acknowledged cursor, sizes, oldest unacknowledged age, ingest position.
    Stats,
    /// One line per record: sequence, GTID, changes, tables, size, acknowledged or not.
    List {
        #[arg(long)]
        from: Option<u64>,
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// One decoded record: GTID, position, tables with row counts, and its change events.
    Show { seq: u64 },
    /// Checks every record; exits non-zero naming each damaged one.
    Verify,
    /// Records from..=to as JSON lines.
    Dump {
        #[arg(long)]
        from: u64,
        #[arg(long)]
        to: u64,
    },
    /// For a WAL sdl cannot open (damaged files or metadata): move the WAL directory aside (kept,
    /// renamed with a timestamp) and create a new WAL at MongoDB's offset, after checking the
    /// source still has the binlog from there. Needs --config; sdl must be stopped.
    Recover,
}

/// Where the WAL is: `--config` (wal.dir and admin.listen) or `--dir`.
#[derive(clap::Args, Debug, Clone)]
pub struct WalTarget {
    /// The service's config file: its wal.dir, and its admin endpoint when the service runs.
    #[arg(long, short, global = true, conflicts_with = "dir")]
    pub config: Option<PathBuf>,
    /// The WAL directory (of a stopped service).
    #[arg(long, global = true)]
    pub dir: Option<PathBuf>,
    /// A running service's admin endpoint (host:port), when not given by --config.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

/// One line of `sdl wal list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListEntry {
    pub seq: u64,
    pub acked: bool,
    pub bytes: u64,
    pub gtid: Option<String>,
    pub timestamp: Option<u32>,
    pub rows: usize,
    pub statements: usize,
    pub tables: Vec<String>,
    /// Set instead of the fields above when the record is damaged.
    pub error: Option<String>,
}

/// `sdl wal show`: a record and its summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShowRecord {
    pub entry: ListEntry,
    pub transaction: Option<TransactionView>,
}

/// A record as `sdl wal show` and `sdl wal dump` print it: every row change with its table, key
/// and column names (the WAL stores those once per record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionView {
    pub gtid: String,
    pub timestamp: u32,
    pub position_after: String,
    pub first_change: u64,
    pub ends_transaction: bool,
    pub changes: Vec<ChangeView>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChangeView {
    Row(RowView),
    Statement(StatementChange),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowView {
    pub op: RowOp,
    pub database: String,
    pub table: String,
    pub file: String,
    pub pos: u64,
    pub primary_key: Vec<String>,
    /// Columns in table order; a column missing from the binlog's row image is left out.
    pub before: Option<Vec<ColumnView>>,
    pub after: Option<Vec<ColumnView>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnView {
    pub name: String,
    pub value: Value,
}

impl From<&SourceTransaction> for TransactionView {
    fn from(t: &SourceTransaction) -> Self {
        let changes = t
            .changes
            .iter()
            .map(|change| match change {
                Change::Row(row) => {
                    let image = |values: &Option<Vec<Value>>| {
                        values.as_ref().map(|values| {
                            row.table
                                .present(values)
                                .map(|(name, value)| ColumnView {
                                    name: name.to_string(),
                                    value: value.clone(),
                                })
                                .collect()
                        })
                    };
                    ChangeView::Row(RowView {
                        op: row.op,
                        database: row.table.database.clone(),
                        table: row.table.name.clone(),
                        file: row.file.to_string(),
                        pos: row.pos,
                        primary_key: row.table.primary_key_names().map(String::from).collect(),
                        before: image(&row.before),
                        after: image(&row.after),
                    })
                }
                // Records written before statements were redacted at the source (src/redact.rs).
                Change::Statement(statement) => ChangeView::Statement(StatementChange {
                    statement: crate::redact::redact_statement(&statement.statement).into_owned(),
                    ..statement.clone()
                }),
            })
            .collect();
        TransactionView {
            gtid: t.gtid.clone(),
            timestamp: t.timestamp,
            position_after: t.position_after.clone(),
            first_change: t.first_change,
            ends_transaction: t.ends_transaction,
            changes,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Damaged {
    pub seq: u64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyReport {
    pub checked_from: Option<u64>,
    pub checked_to: u64,
    pub damaged: Vec<Damaged>,
}

pub fn stats(wal: &Wal<SourceTransaction>) -> anyhow::Result<WalStats> {
    Ok(wal.stats()?)
}

fn entry(
    seq: u64,
    acked: u64,
    result: Result<Option<Stored<SourceTransaction>>, sdl_wal::WalError>,
) -> Option<(ListEntry, Option<TransactionView>)> {
    match result {
        Ok(None) => None,
        Ok(Some(stored)) => {
            let t = &stored.record;
            let mut tables: Vec<String> = Vec::new();
            let mut rows = 0;
            let mut statements = 0;
            for change in &t.changes {
                match change {
                    Change::Row(r) => {
                        rows += 1;
                        let name = format!("{}.{}", r.table.database, r.table.name);
                        if !tables.contains(&name) {
                            tables.push(name);
                        }
                    }
                    Change::Statement(_) => statements += 1,
                }
            }
            Some((
                ListEntry {
                    seq,
                    acked: seq <= acked,
                    bytes: stored.frame_len as u64,
                    gtid: Some(t.gtid.clone()),
                    timestamp: Some(t.timestamp),
                    rows,
                    statements,
                    tables,
                    error: None,
                },
                Some(TransactionView::from(&stored.record)),
            ))
        }
        Err(e) => Some((
            ListEntry {
                seq,
                acked: seq <= acked,
                bytes: 0,
                gtid: None,
                timestamp: None,
                rows: 0,
                statements: 0,
                tables: Vec::new(),
                error: Some(e.to_string()),
            },
            None,
        )),
    }
}

pub fn list(
    wal: &Wal<SourceTransaction>,
    from: Option<u64>,
    limit: u64,
) -> anyhow::Result<Vec<ListEntry>> {
    let acked = wal.acked()?;
    let last = wal.last_seq()?;
    let first = wal.first_seq()?.unwrap_or(last + 1);
    let from = from.unwrap_or(first).max(first);
    let to = last.min(from.saturating_add(limit).saturating_sub(1));
    Ok((from..=to)
        .filter_map(|seq| entry(seq, acked, wal.get(seq)).map(|(e, _)| e))
        .collect())
}

pub fn show(wal: &Wal<SourceTransaction>, seq: u64) -> anyhow::Result<ShowRecord> {
    let acked = wal.acked()?;
    match entry(seq, acked, wal.get(seq)) {
        Some((entry, transaction)) => Ok(ShowRecord { entry, transaction }),
        None => bail!(
            "no WAL record {seq} (the WAL holds {:?}..={})",
            wal.first_seq()?,
            wal.last_seq()?
        ),
    }
}

pub fn verify(wal: &Wal<SourceTransaction>) -> anyhow::Result<VerifyReport> {
    Ok(VerifyReport {
        checked_from: wal.first_seq()?,
        checked_to: wal.last_seq()?,
        damaged: wal
            .verify()?
            .into_iter()
            .map(|(seq, e)| Damaged {
                seq,
                error: e.to_string(),
            })
            .collect(),
    })
}

/// JSON lines: one `{"seq": N, "transaction": {...}}` (or `{"seq": N, "error": "..."}`) per record,
/// each handed to `emit` as soon as it is made (a dump never holds more than one record).
pub fn dump(
    wal: &Wal<SourceTransaction>,
    from: u64,
    to: u64,
    mut emit: impl FnMut(String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let acked = wal.acked()?;
    // Records beyond the last one do not exist: no need to look them up one by one.
    let to = to.min(wal.last_seq()?);
    for seq in from..=to {
        if let Some((entry, transaction)) = entry(seq, acked, wal.get(seq)) {
            let line = match transaction {
                Some(t) => {
                    serde_json::json!({ "seq": seq, "acked": entry.acked, "transaction": t })
                }
                None => serde_json::json!({ "seq": seq, "error": entry.error }),
            };
            emit(line.to_string())?;
        }
    }
    Ok(())
}

/// Runs a `sdl wal` command and returns the process exit code.
pub fn run(target: WalTarget, command: WalCommand) -> anyhow::Result<u8> {
    if let WalCommand::Recover = command {
        let Some(config) = &target.config else {
            bail!("`sdl wal recover` needs --config FILE: it reads MongoDB's offset and checks the source, besides the WAL directory");
        };
        return crate::walrecover::run(config);
    }
    let (dir, admin) = match (&target.config, &target.dir) {
        (Some(path), _) => {
            let config = Config::load(path)?;
            (
                config.wal.dir,
                target.admin.clone().or(config.admin.listen_addr()),
            )
        }
        (None, Some(dir)) => (dir.clone(), target.admin.clone()),
        (None, None) => {
            bail!("say where the WAL is: --config FILE (the service's config) or --dir DIR")
        }
    };
    if !dir.exists() {
        bail!(
            "there is no WAL at {}: check wal.dir in the config, or --dir",
            dir.display()
        );
    }
    let source = match Wal::<SourceTransaction>::open(&dir) {
        Ok(wal) => {
            for repair in wal.metadata_repairs() {
                eprintln!("sdl: WAL metadata repaired at open: {repair}");
            }
            Source::Local(wal)
        }
        Err(open_error) => match admin {
            Some(addr) => Source::Remote {
                addr,
                // The service's token, kept in its WAL directory; /wal/show and /wal/dump need it.
                token: crate::admin::read_token(&dir),
            },
            None => {
                return Err(anyhow::Error::from(open_error).context(
                    "the WAL could not be opened directly; if sdl is running, pass --config (or --admin HOST:PORT) so this command can ask its admin endpoint",
                ))
            }
        },
    };
    let json = target.json;
    match command {
        WalCommand::Stats => {
            let stats: WalStats = source.get("/wal/stats", stats)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print_stats(&stats);
            }
            Ok(0)
        }
        WalCommand::List { from, limit } => {
            let path = format!(
                "/wal/list?limit={limit}{}",
                from.map(|f| format!("&from={f}")).unwrap_or_default()
            );
            let entries: Vec<ListEntry> = source.get(&path, |w| list(w, from, limit))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                print_list(&entries);
            }
            Ok(if entries.iter().any(|e| e.error.is_some()) {
                1
            } else {
                0
            })
        }
        WalCommand::Show { seq } => {
            let record: ShowRecord = source.get(&format!("/wal/show/{seq}"), |w| show(w, seq))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                print_list(std::slice::from_ref(&record.entry));
                if let Some(t) = &record.transaction {
                    println!("\nposition after: {}", t.position_after);
                    if t.first_change > 0 || !t.ends_transaction {
                        println!(
                            "fragment of transaction {}: changes {}..{}{}",
                            t.gtid,
                            t.first_change,
                            t.first_change + t.changes.len() as u64,
                            if t.ends_transaction {
                                " (its last)"
                            } else {
                                " (more follow)"
                            }
                        );
                    }
                    println!("changes (by ordinal in the transaction):");
                    for (i, change) in t.changes.iter().enumerate() {
                        let ordinal = t.first_change + i as u64;
                        println!("  [{ordinal}] {}", serde_json::to_string(change)?);
                    }
                }
            }
            Ok(if record.entry.error.is_some() { 1 } else { 0 })
        }
        WalCommand::Verify => {
            let report: VerifyReport = source.get("/wal/verify", verify)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else if report.damaged.is_empty() {
                println!(
                    "ok: records {:?}..={} verified, none damaged",
                    report.checked_from, report.checked_to
                );
            } else {
                for d in &report.damaged {
                    println!("DAMAGED record {}: {}", d.seq, d.error);
                }
                println!("{} damaged record(s)", report.damaged.len());
            }
            Ok(if report.damaged.is_empty() { 0 } else { 1 })
        }
        WalCommand::Recover => unreachable!("handled above"),
        WalCommand::Dump { from, to } => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let mut print = |line: String| -> anyhow::Result<()> {
                writeln!(out, "{line}")?;
                Ok(())
            };
            match &source {
                Source::Local(wal) => dump(wal, from, to, &mut print)?,
                Source::Remote { .. } => {
                    // The endpoint answers at most MAX_RECORDS_PER_REQUEST records per request.
                    let mut start = from;
                    while start <= to {
                        let end =
                            to.min(start.saturating_add(crate::admin::MAX_RECORDS_PER_REQUEST - 1));
                        source.stream_lines(
                            &format!("/wal/dump?from={start}&to={end}"),
                            &mut print,
                        )?;
                        match end.checked_add(1) {
                            Some(next) => start = next,
                            None => break,
                        }
                    }
                }
            }
            Ok(0)
        }
    }
}

enum Source {
    Local(Wal<SourceTransaction>),
    Remote {
        addr: String,
        token: anyhow::Result<String>,
    },
}

impl Source {
    /// GET `path` from the running service: the response, or an error with its answer (a 401
    /// says where the token is; a token that could not be read says why).
    fn call(
        &self,
        addr: &str,
        token: &anyhow::Result<String>,
        path: &str,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        let url = format!("http://{addr}{path}");
        let mut request = ureq::get(&url).config().http_status_as_error(false).build();
        if let Ok(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        let mut response = request.call().with_context(|| {
            format!(
                "the WAL is locked by a running sdl and its admin endpoint {url} did not answer"
            )
        })?;
        let status = response.status();
        if !status.is_success() {
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let mut error = anyhow::anyhow!("{url} answered {status}: {}", body.trim());
            if let Err(e) = token {
                error = error.context(format!("{e:#}"));
            }
            return Err(error);
        }
        Ok(response)
    }

    /// Each line of a streamed answer, as it arrives.
    fn stream_lines(
        &self,
        path: &str,
        mut emit: impl FnMut(String) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        use std::io::BufRead;
        let Source::Remote { addr, token } = self else {
            unreachable!("only asked of a running service")
        };
        let mut response = self.call(addr, token, path)?;
        let reader = std::io::BufReader::new(response.body_mut().as_reader());
        for line in reader.lines() {
            emit(line.with_context(|| format!("reading {path} from the admin endpoint"))?)?;
        }
        Ok(())
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        local: impl FnOnce(&Wal<SourceTransaction>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Source::Local(wal) => local(wal),
            Source::Remote { addr, token } => {
                let mut response = self.call(addr, token, path)?;
                let body = response.body_mut().read_to_string()?;
                serde_json::from_str(&body)
                    .with_context(|| format!("unexpected answer from http://{addr}{path}: {body}"))
            }
        }
    }
}

fn print_stats(s: &WalStats) {
    let rows = [
        ("wal id", s.wal_id.clone()),
        (
            "first sequence",
            s.first_seq.map_or("-".into(), |v| v.to_string()),
        ),
        ("last sequence", s.last_seq.to_string()),
        ("acknowledged", s.acked_seq.to_string()),
        ("records", s.records.to_string()),
        ("unacknowledged records", s.unacked_records.to_string()),
        ("bytes", s.bytes.to_string()),
        ("unacknowledged bytes", s.unacked_bytes.to_string()),
        (
            "oldest unacknowledged age",
            s.oldest_unacked_age_ms
                .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
        ),
        (
            "ingest position",
            s.ingest_position.clone().unwrap_or_else(|| "-".into()),
        ),
        ("disk usage (bytes)", s.disk_bytes.to_string()),
    ];
    for (k, v) in rows {
        println!("{k:<26} {v}");
    }
}

fn print_list(entries: &[ListEntry]) {
    println!(
        "{:>10}  {:<5}  {:<24}  {:>6}  {:>4}  {:>9}  tables",
        "seq", "acked", "gtid", "rows", "ddl", "bytes"
    );
    for e in entries {
        match &e.error {
            Some(err) => println!("{:>10}  {:<5}  DAMAGED: {err}", e.seq, e.acked),
            None => println!(
                "{:>10}  {:<5}  {:<24}  {:>6}  {:>4}  {:>9}  {}",
                e.seq,
                e.acked,
                e.gtid.as_deref().unwrap_or("-"),
                e.rows,
                e.statements,
                e.bytes,
                e.tables.join(",")
            ),
        }
    }
}
