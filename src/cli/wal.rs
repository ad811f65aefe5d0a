//! `sdl wal ...`: the operator's read-only view of the WAL, and `sdl wal recover` (the one command
//! that changes it: see `recover.rs`).
//!
//! Every inspection command works on the WAL directory of a stopped service (opened directly) and
//! on a running one (sled holds an exclusive lock, so the command asks the service's admin
//! endpoint, which answers with the very same functions: `crate::wal_view`). Output is a
//! human-readable table, or JSON with `--json`; records are shown as the change documents MongoDB
//! will hold (relaxed extended JSON, the shape of docs/change-document.md). Reading never changes
//! records (opening a stopped WAL applies the metadata repairs and format upgrade `sdl run` would,
//! sdl_wal's header, and says so on stderr), and a directory that does not hold a WAL is refused,
//! never turned into one. Output into a pipe closed early (`| head`) ends the command quietly with
//! exit 0.

use std::path::PathBuf;

use std::io::Write;

use anyhow::bail;
use clap::Subcommand;
use sdl_wal::Wal;

use super::admin_client::AdminClient;
use super::print::{print_list, print_show, print_stats, print_verify};
use crate::config::Config;
use crate::event::SourceTransaction;
use crate::messages::{self, wal_range};
use crate::wal_view::{
    dump, is_wal_dir, list, read_token, show, stats, verify, ListEntry, ShowRecord, StatsView,
    VerifyReport, MAX_RECORDS_PER_REQUEST,
};
use crate::{redact, ExitCode};

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

/// Runs a `sdl wal` command and returns the process exit code; an error is printed as
/// `sdl: error: ...` with exit code 2 for a wrong command line or config, else 1.
pub fn run(target: WalTarget, command: WalCommand) -> u8 {
    match run_to_stdout(target, command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!(
                "sdl: error: {}",
                redact::redact_error(&messages::error_chain(&error))
            );
            let usage = error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<crate::config::ConfigError>().is_some();
            if usage {
                ExitCode::Config as u8
            } else {
                ExitCode::Failure as u8
            }
        }
    }
}

fn run_to_stdout(target: WalTarget, command: WalCommand) -> anyhow::Result<u8> {
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
        return super::recover::run(config);
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
                print_show(out, &record)?;
            }
            Ok(if record.entry.error.is_some() { 1 } else { 0 })
        }
        WalCommand::Verify => {
            let report: VerifyReport = source.get("/wal/verify", verify)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                print_verify(out, &report)?;
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
                    Source::Remote(client) => {
                        // The endpoint answers at most MAX_RECORDS_PER_REQUEST records a request.
                        let mut start = from;
                        while start <= to {
                            let end = to.min(start.saturating_add(MAX_RECORDS_PER_REQUEST - 1));
                            client.stream_lines(
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
                    Source::Remote(AdminClient {
                        addr: addr.clone(),
                        token: Err(anyhow::anyhow!(
                            "no admin token: with --admin alone sdl cannot read it; add --config FILE (or --dir DIR) so it reads admin.token from the WAL directory"
                        )),
                    }),
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
            Some(addr) => Ok(Source::Remote(AdminClient {
                addr,
                // The service's token, kept in its WAL directory; /wal/show and /wal/dump need it.
                token: read_token(&dir),
            })),
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
    Remote(AdminClient),
}

impl Source {
    /// `path`'s answer from the running service, or `local` on the WAL opened directly (the
    /// function the service answers `path` with).
    fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        local: impl FnOnce(&Wal<SourceTransaction>) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self {
            Source::Local(wal) => local(wal),
            Source::Remote(client) => client.get(path),
        }
    }
}
