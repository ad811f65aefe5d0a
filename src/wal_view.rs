//! The WAL as an operator reads it, shared by `sdl wal` (`crate::cli::wal`, on a stopped service's
//! directory) and the service's admin endpoint (for a running one), so that both answer with the
//! very same functions: stats, a list of records, one record, a verification and a dump.
//!
//! Records are shown as the change documents MongoDB will hold (relaxed extended JSON, the shape of
//! docs/change-document.md, written by the sink's own document writer). Reading never changes
//! records. Also here: what the endpoint and `sdl wal` agree on, i.e. the most records one request
//! covers and where the admin token is kept.

use std::path::{Path, PathBuf};

use anyhow::bail;
use sdl_wal::{Record, Stored, Wal, WalStats};
use serde::{Deserialize, Serialize};

use crate::event::{Change, SourceTransaction};
use crate::messages::wal_range;

/// The most records one `/wal/dump` or `/wal/list` request covers; `sdl wal dump` asks for a larger
/// range in pieces of this size.
pub const MAX_RECORDS_PER_REQUEST: u64 = 10_000;

/// The token file's name, in the WAL directory.
pub const TOKEN_FILE: &str = "admin.token";

/// Where the admin token of the service whose WAL is `wal_dir` is kept.
pub fn token_path(wal_dir: &Path) -> PathBuf {
    wal_dir.join(TOKEN_FILE)
}

/// The token `sdl wal` sends to a running service whose WAL is `wal_dir`.
pub fn read_token(wal_dir: &Path) -> anyhow::Result<String> {
    let path = token_path(wal_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the admin token file {}: {e}. Run this command as the service's user (e.g. `sudo -u sdl sdl wal ...`) or root",
            path.display()
        )
    })?;
    Ok(text.trim().to_string())
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
                let table = match change {
                    Change::Row(r) => &r.table,
                    Change::Snapshot(r) => &r.table,
                    Change::Statement(_) => {
                        statements += 1;
                        continue;
                    }
                };
                rows += 1;
                let name = format!("{}.{}", table.database, table.name);
                if !tables.contains(&name) {
                    tables.push(name);
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
pub fn is_wal_dir(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StatementChange;

    fn ddl(n: u64) -> SourceTransaction {
        SourceTransaction {
            gtid: format!("0-1-{n}"),
            timestamp: 7,
            position_after: format!("0-1-{n}"),
            first_change: 0,
            ends_transaction: true,
            changes: vec![Change::Statement(StatementChange {
                database: "shop".into(),
                statement: format!("CREATE TABLE t{n} (id INT PRIMARY KEY)"),
                file: "bin.000001".into(),
                pos: 4 + n,
            })],
        }
    }

    #[test]
    fn an_empty_wal_lists_nothing_and_says_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_wal_dir(dir.path()));
        let wal = Wal::<SourceTransaction>::open(dir.path()).unwrap();
        assert!(is_wal_dir(dir.path()));
        assert!(list(&wal, None, 50).unwrap().is_empty());
        let missing = show(&wal, 1, "default").unwrap_err().to_string();
        assert_eq!(
            missing,
            "no WAL record 1: the WAL holds no records (the next one will be 1)"
        );
        let report = verify(&wal).unwrap();
        assert_eq!((report.checked_from, report.checked_to), (None, 0));
        assert!(report.damaged.is_empty());
        let mut lines = Vec::new();
        dump(&wal, 1, u64::MAX, "default", |l| {
            lines.push(l);
            Ok(())
        })
        .unwrap();
        assert!(lines.is_empty());
    }

    #[test]
    fn records_are_listed_shown_and_dumped_as_change_documents() {
        let dir = tempfile::tempdir().unwrap();
        let wal = Wal::<SourceTransaction>::open(dir.path()).unwrap();
        for n in 1..=3 {
            wal.append(&[ddl(n)], format!("0-1-{n}").as_bytes())
                .unwrap();
        }
        wal.acknowledge(1).unwrap();

        let listed = list(&wal, None, 2).unwrap();
        let summary: Vec<_> = listed
            .iter()
            .map(|e| (e.seq, e.acked, e.gtid.as_deref(), e.statements, e.rows))
            .collect();
        assert_eq!(
            summary,
            [
                (1, true, Some("0-1-1"), 1, 0),
                (2, false, Some("0-1-2"), 1, 0)
            ]
        );
        assert_eq!(listed[0].time.as_deref(), Some("1970-01-01T00:00:07Z"));
        // `from` below the first record starts at the first; a limit past the last stops there.
        assert_eq!(list(&wal, Some(0), 1).unwrap()[0].seq, 1);
        assert_eq!(list(&wal, Some(3), 50).unwrap().len(), 1);

        let shown = show(&wal, 2, "src1").unwrap();
        let t = shown.transaction.unwrap();
        assert_eq!((t.gtid.as_str(), t.documents.len()), ("0-1-2", 1));
        assert_eq!(t.documents, change_documents("src1", &ddl(2)));

        let mut lines = Vec::new();
        dump(&wal, 2, u64::MAX, "src1", |l| {
            lines.push(l);
            Ok(())
        })
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], change_documents("src1", &ddl(2))[0].to_string());

        let stats = stats(&wal).unwrap();
        assert_eq!(stats.wal_format, Some(SourceTransaction::FORMAT_VERSION));
        assert_eq!((stats.stats.last_seq, stats.stats.acked_seq), (3, 1));
        let report = verify(&wal).unwrap();
        assert_eq!((report.checked_from, report.checked_to), (Some(1), 3));
    }

    #[test]
    fn the_token_is_read_trimmed_and_a_missing_one_says_who_may_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_token(dir.path()).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "cannot read the admin token file {}: ",
                token_path(dir.path()).display()
            )) && error.ends_with("or root"),
            "{error}"
        );
        std::fs::write(dir.path().join(TOKEN_FILE), "abc\n").unwrap();
        assert_eq!(read_token(dir.path()).unwrap(), "abc");
    }
}
