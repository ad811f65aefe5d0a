//! `sdl wal ...`: the operator's read-only view of the WAL, and `sdl wal recover` (the one command
//! that changes it: see `walrecover.rs`).
//!
//! Every inspection command works on the WAL directory of a stopped service (opened directly) and on a
//! running one (sled holds an exclusive lock, so the command asks the service's admin endpoint,
//! which answers with the very same functions below). Output is a human-readable table, or JSON
//! with `--json`; records are shown as the change documents MongoDB will hold (relaxed extended
//! JSON, the shape of docs/change-document.md). Reading never changes records (opening a stopped
//! WAL applies the metadata repairs and format upgrade `sdl run` would, sdl_wal's header, and says
//! so on stderr), and a directory that does not hold a WAL is refused, never turned into one. Output into a pipe closed early
//! (`| head`) ends the command quietly with exit 0.

use std::path::PathBuf;

use std::io::Write;

use anyhow::{bail, Context};
use clap::Subcommand;
use sdl_wal::{Record, Stored, Wal, WalStats};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::event::{Change, SourceTransaction};
use crate::messages::wal_range;

#[derive(Subcommand, Debug, Clone)]
pub enum WalCommand {
    /// First/last sequence, acknowledged cursor, sizes, oldest unacknowledged age, ingest
    /// position and the WAL record format version.
    Stats,
    /// One line per record: sequence, GTID, commit time, changes, tables, size, acknowledged or
    /// not. The oldest records first, or the newest with --last.
    List {
        /// The first sequence to list (default: the oldest record).
        #[arg(long, conflicts_with = "last")]
        from: Option<u64>,
        /// The most records to list.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// List the newest N records instead.
        #[arg(long, value_name = "N")]
        last: Option<u64>,
    },
    /// One record: GTID, position, and its changes as the change documents MongoDB holds.
    Show { seq: u64 },
    /// Checks every record; exits non-zero naming each damaged one.
    Verify,
    /// Change documents of records FROM..=TO, one JSON line each (relaxed extended JSON, the
    /// shape MongoDB holds; a damaged record gives a `{"seq", "error"}` line).
    Dump {
        /// The first sequence (default: the oldest record).
        #[arg(long)]
        from: Option<u64>,
        /// The last sequence, included (default: the newest record).
        #[arg(long)]
        to: Option<u64>,
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
    /// A running service's admin endpoint (host:port): alone, or as the fallback when the WAL
    /// directory is locked by the running service.
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// With --dir alone: the source.name whose change `_id`s `show` and `dump` print (default
    /// "default"; with --config, the config's).
    #[arg(long, global = true, value_name = "NAME")]
    pub source_name: Option<String>,
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
    /// The source commit time (RFC 3339, UTC).
    pub time: Option<String>,
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

/// A record as `sdl wal show` prints it: where it leaves the source position, which part of its
/// transaction it holds, and its changes as the change documents MongoDB holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionView {
    pub gtid: String,
    /// The source commit time (RFC 3339, UTC).
    pub time: String,
    pub position_after: String,
    pub first_change: u64,
    pub ends_transaction: bool,
    /// The change documents, in relaxed extended JSON (docs/change-document.md).
    pub documents: Vec<serde_json::Value>,
}

/// The change documents of a record exactly as the sink writes them for `source` (`source.name`:
/// it is part of each `_id`), in relaxed extended JSON (`{"$date": ...}` for `ts`, plain numbers,
/// `{"$binary": ...}` for bytes).
pub fn change_documents(source: &str, t: &SourceTransaction) -> Vec<serde_json::Value> {
    crate::sink::document::transaction_documents(source, t)
        .into_iter()
        .map(|d| bson::Bson::Document(d).into_relaxed_extjson())
        .collect()
}

fn commit_time(unix_seconds: u32) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(unix_seconds)),
    )
    .to_string()
}

impl TransactionView {
    fn new(source: &str, t: &SourceTransaction) -> Self {
        TransactionView {
            gtid: t.gtid.clone(),
            time: commit_time(t.timestamp),
            position_after: t.position_after.clone(),
            first_change: t.first_change,
            ends_transaction: t.ends_transaction,
            documents: change_documents(source, t),
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

/// `sdl wal stats`: the WAL's summary and the record format this sdl reads and writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsView {
    #[serde(flatten)]
    pub stats: WalStats,
    /// The WAL record format version (`SourceTransaction::FORMAT_VERSION`) of the sdl that
    /// answered; `None` from an older sdl's admin endpoint.
    #[serde(default)]
    pub wal_format: Option<u16>,
}

pub fn stats(wal: &Wal<SourceTransaction>) -> anyhow::Result<StatsView> {
    Ok(StatsView {
        stats: wal.stats()?,
        wal_format: Some(SourceTransaction::FORMAT_VERSION),
    })
}

fn entry(
    seq: u64,
    acked: u64,
    result: Result<Option<Stored<SourceTransaction>>, sdl_wal::WalError>,
) -> Option<(ListEntry, Option<SourceTransaction>)> {
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
                    time: Some(commit_time(t.timestamp)),
                    rows,
                    statements,
                    tables,
                    error: None,
                },
                Some(stored.record),
            ))
        }
        Err(e) => Some((
            ListEntry {
                seq,
                acked: seq <= acked,
                bytes: 0,
                gtid: None,
                time: None,
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

/// Record `seq`, its changes shown as the documents `source` (`source.name`) writes.
pub fn show(wal: &Wal<SourceTransaction>, seq: u64, source: &str) -> anyhow::Result<ShowRecord> {
    let acked = wal.acked()?;
    match entry(seq, acked, wal.get(seq)) {
        Some((entry, transaction)) => Ok(ShowRecord {
            entry,
            transaction: transaction.map(|t| TransactionView::new(source, &t)),
        }),
        None => bail!(
            "no WAL record {seq}: the WAL holds {}",
            wal_range(wal.first_seq()?, wal.last_seq()?)
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

/// The change documents of records `from..=to` as JSON lines (relaxed extended JSON, one change
/// document per line; a damaged record gives `{"seq": N, "error": "..."}`), handed to `emit` one
/// by one so that a large range is never held in memory.
pub fn dump(
    wal: &Wal<SourceTransaction>,
    from: u64,
    to: u64,
    source: &str,
    mut emit: impl FnMut(String) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    // Records beyond the last one do not exist: no need to look them up one by one.
    let to = to.min(wal.last_seq()?);
    for seq in from..=to {
        match wal.get(seq) {
            Ok(None) => {}
            Ok(Some(stored)) => {
                for document in change_documents(source, &stored.record) {
                    emit(document.to_string())?;
                }
            }
            Err(e) => emit(serde_json::json!({ "seq": seq, "error": e.to_string() }).to_string())?,
        }
    }
    Ok(())
}

/// Whether `dir` holds a WAL: sled's `conf` and `db` files, which every WAL directory has from
/// its creation on. Inspection never creates a WAL, so anything else is refused.
pub fn is_wal_dir(dir: &std::path::Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Refuses a `--dir`/`wal.dir` that is not a WAL, naming what it is.
fn check_wal_dir(dir: &std::path::Path, from_config: bool) -> anyhow::Result<()> {
    let key = if from_config {
        "wal.dir in the config"
    } else {
        "--dir"
    };
    if !dir.exists() {
        bail!(
            "there is no WAL at {}: the directory does not exist (check {key}; sdl creates the WAL when the service first starts)",
            dir.display()
        );
    }
    if !dir.is_dir() {
        bail!(
            "{} is not a WAL directory: it is a file (check {key})",
            dir.display()
        );
    }
    if !is_wal_dir(dir) {
        bail!(
            "{} is not a WAL directory: it lacks the WAL's database files (conf, db). Check {key}; `sdl wal` only reads a WAL and never creates one",
            dir.display()
        );
    }
    Ok(())
}

/// Runs a `sdl wal` command and returns the process exit code.
pub fn run(target: WalTarget, command: WalCommand) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    match run_to(target, command, &mut out).and_then(|code| {
        out.flush()?;
        Ok(code)
    }) {
        // The reader went away (`sdl wal dump | head`): what it wanted was printed.
        Err(e) if is_broken_pipe(&e) => Ok(0),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run_to(target: WalTarget, command: WalCommand, out: &mut impl Write) -> anyhow::Result<u8> {
    if let WalCommand::Recover = command {
        let Some(config) = &target.config else {
            bail!(UsageError("`sdl wal recover` needs --config FILE: it reads MongoDB's offset and checks the source, besides the WAL directory".into()));
        };
        return crate::walrecover::run(config);
    }
    if let WalCommand::Dump {
        from: Some(from),
        to: Some(to),
    } = command
    {
        if from > to {
            bail!(UsageError(format!(
                "--from {from} is after --to {to}: give --from <= --to (both default to the WAL's oldest and newest records)"
            )));
        }
    }
    let (source, source_name) = open(&target)?;
    let json = target.json;
    match command {
        WalCommand::Stats => {
            let stats: StatsView = source.get("/wal/stats", stats)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&stats)?)?;
            } else {
                print_stats(out, &stats)?;
            }
            Ok(0)
        }
        WalCommand::List { from, limit, last } => {
            let from = match last {
                Some(n) => {
                    let stats: StatsView = source.get("/wal/stats", stats)?;
                    let newest = stats.stats.last_seq;
                    Some(newest.saturating_sub(n.saturating_sub(1)).max(1))
                }
                None => from,
            };
            let limit = last.unwrap_or(limit);
            let path = format!(
                "/wal/list?limit={limit}{}",
                from.map(|f| format!("&from={f}")).unwrap_or_default()
            );
            let entries: Vec<ListEntry> = source.get(&path, |w| list(w, from, limit))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else {
                print_list(out, &entries)?;
            }
            Ok(if entries.iter().any(|e| e.error.is_some()) {
                1
            } else {
                0
            })
        }
        WalCommand::Show { seq } => {
            let record: ShowRecord =
                source.get(&format!("/wal/show/{seq}"), |w| show(w, seq, &source_name))?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&record)?)?;
            } else {
                print_list(out, std::slice::from_ref(&record.entry))?;
                if let Some(t) = &record.transaction {
                    writeln!(out, "\nposition after: {}", t.position_after)?;
                    if t.first_change > 0 || !t.ends_transaction {
                        writeln!(
                            out,
                            "fragment of transaction {}: changes {}..{}{}",
                            t.gtid,
                            t.first_change,
                            t.first_change + t.documents.len() as u64,
                            if t.ends_transaction {
                                " (its last)"
                            } else {
                                " (more follow)"
                            }
                        )?;
                    }
                    writeln!(out, "change documents, as MongoDB holds them:")?;
                    for document in &t.documents {
                        writeln!(out, "{}", serde_json::to_string_pretty(document)?)?;
                    }
                }
            }
            Ok(if record.entry.error.is_some() { 1 } else { 0 })
        }
        WalCommand::Verify => {
            let report: VerifyReport = source.get("/wal/verify", verify)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else if report.damaged.is_empty() {
                match report.checked_from {
                    Some(first) if first <= report.checked_to => writeln!(
                        out,
                        "ok: records {first} to {} verified, none damaged",
                        report.checked_to
                    )?,
                    _ => writeln!(
                        out,
                        "ok: the WAL holds {}",
                        wal_range(None, report.checked_to)
                    )?,
                }
            } else {
                for d in &report.damaged {
                    writeln!(out, "DAMAGED record {}: {}", d.seq, d.error)?;
                }
                writeln!(out, "{} damaged record(s)", report.damaged.len())?;
            }
            Ok(if report.damaged.is_empty() { 0 } else { 1 })
        }
        WalCommand::Recover => unreachable!("handled above"),
        WalCommand::Dump { from, to } => {
            let (from, to) = match (from, to) {
                (Some(from), Some(to)) => (from, to),
                _ => {
                    let stats: StatsView = source.get("/wal/stats", stats)?;
                    let first = stats.stats.first_seq.unwrap_or(stats.stats.last_seq + 1);
                    (from.unwrap_or(first), to.unwrap_or(stats.stats.last_seq))
                }
            };
            // (A reversed range given in full was refused above; one made by a default, like an
            // empty WAL's, is just empty.)
            let mut printed = 0u64;
            if from <= to {
                match &source {
                    Source::Local(wal) => dump(wal, from, to, &source_name, |line| {
                        writeln!(out, "{line}")?;
                        printed += 1;
                        Ok(())
                    })?,
                    Source::Remote { .. } => {
                        // The endpoint answers at most MAX_RECORDS_PER_REQUEST records a request.
                        let mut start = from;
                        while start <= to {
                            let end = to.min(start.saturating_add(
                                crate::service::admin::MAX_RECORDS_PER_REQUEST - 1,
                            ));
                            source.stream_lines(
                                &format!("/wal/dump?from={start}&to={end}"),
                                |line| {
                                    writeln!(out, "{line}")?;
                                    printed += 1;
                                    Ok(())
                                },
                            )?;
                            match end.checked_add(1) {
                                Some(next) => start = next,
                                None => break,
                            }
                        }
                    }
                }
            }
            if printed == 0 {
                // Said on stderr, so that the output stays JSON lines only.
                let stats: StatsView = source.get("/wal/stats", stats)?;
                eprintln!(
                    "sdl: nothing to dump: the WAL holds {}",
                    wal_range(stats.stats.first_seq, stats.stats.last_seq)
                );
            }
            Ok(0)
        }
    }
}

/// A wrong command line (exit code 2, like clap's own errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The WAL to read: the directory (`--dir`, or `wal.dir` of `--config`) opened directly, or the
/// running service's admin endpoint when the directory is locked by it (or `--admin` alone).
/// The `source.name` shown in the `_id`s of a local WAL's documents is the config's (with `--dir`
/// alone: `--source-name`, else the default); a running service answers with its own.
fn open(target: &WalTarget) -> anyhow::Result<(Source, String)> {
    let (dir, admin, from_config, source_name) = match (&target.config, &target.dir) {
        (Some(path), _) => {
            let config = Config::load(path)?;
            (
                config.wal.dir,
                target.admin.clone().or(config.admin.listen_addr()),
                true,
                config.source.name,
            )
        }
        (None, Some(dir)) => (
            dir.clone(),
            target.admin.clone(),
            false,
            target
                .source_name
                .clone()
                .unwrap_or_else(crate::config::default_source_name),
        ),
        (None, None) => match &target.admin {
            Some(addr) => {
                return Ok((
                    Source::Remote {
                        addr: addr.clone(),
                        token: Err(anyhow::anyhow!(
                            "no admin token: with --admin alone sdl cannot read it; add --config FILE (or --dir DIR) so it reads admin.token from the WAL directory"
                        )),
                    },
                    String::new(),
                ))
            }
            None => bail!(UsageError(
                "say where the WAL is: --config FILE (the service's config), --dir DIR (a stopped service's WAL directory) or --admin HOST:PORT (a running service's admin endpoint)".into()
            )),
        },
    };
    check_wal_dir(&dir, from_config)?;
    let source = match Wal::<SourceTransaction>::open(&dir) {
        Ok(wal) => {
            for repair in wal.metadata_repairs() {
                eprintln!("sdl: WAL metadata repaired at open: {repair}");
            }
            Ok(Source::Local(wal))
        }
        Err(open_error) => match admin {
            Some(addr) => Ok(Source::Remote {
                addr,
                // The service's token, kept in its WAL directory; /wal/show and /wal/dump need it.
                token: crate::service::admin::read_token(&dir),
            }),
            None => Err(anyhow::anyhow!(
                "{}; if sdl is running with this WAL, pass --config (or --admin HOST:PORT) so this command can ask its admin endpoint",
                crate::messages::wal_open_error(&open_error)
            )),
        },
    };
    source.map(|source| (source, source_name))
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

fn print_stats(out: &mut impl Write, view: &StatsView) -> std::io::Result<()> {
    let s = &view.stats;
    let rows = [
        ("wal id", s.wal_id.clone()),
        (
            "wal format version",
            view.wal_format.map_or("-".into(), |v| v.to_string()),
        ),
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
        writeln!(out, "{k:<26} {v}")?;
    }
    Ok(())
}

fn print_list(out: &mut impl Write, entries: &[ListEntry]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>10}  {:<5}  {:<24}  {:<20}  {:>6}  {:>4}  {:>9}  tables",
        "seq", "acked", "gtid", "time (UTC)", "rows", "ddl", "bytes"
    )?;
    for e in entries {
        match &e.error {
            Some(err) => writeln!(out, "{:>10}  {:<5}  DAMAGED: {err}", e.seq, e.acked)?,
            None => writeln!(
                out,
                "{:>10}  {:<5}  {:<24}  {:<20}  {:>6}  {:>4}  {:>9}  {}",
                e.seq,
                e.acked,
                e.gtid.as_deref().unwrap_or("-"),
                e.time.as_deref().unwrap_or("-"),
                e.rows,
                e.statements,
                e.bytes,
                e.tables.join(",")
            )?,
        }
    }
    Ok(())
}
