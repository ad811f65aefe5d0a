//! What `sdl wal` prints without `--json`: the tables of `stats`, `list` and `show` (fixed-width
//! columns written with `format!` widths; docs/decisions.md says why no table crate) and the text
//! of `show` and `verify`.

use std::io::Write;

use crate::messages::wal_range;
use crate::wal_view::{ListEntry, ShowRecord, StatsView, VerifyReport};

pub(super) fn print_stats(out: &mut impl Write, view: &StatsView) -> std::io::Result<()> {
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

pub(super) fn print_list(out: &mut impl Write, entries: &[ListEntry]) -> std::io::Result<()> {
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

/// `sdl wal show`: the record's line of the list, where it leaves the source position, which part
/// of its transaction it holds, and its change documents (pretty JSON).
pub(super) fn print_show(out: &mut impl Write, record: &ShowRecord) -> anyhow::Result<()> {
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
    Ok(())
}

/// `sdl wal verify`: `ok: ...`, or each damaged record and their count.
pub(super) fn print_verify(out: &mut impl Write, report: &VerifyReport) -> std::io::Result<()> {
    if report.damaged.is_empty() {
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal_view::{Damaged, TransactionView};

    fn printed(print: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        print(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn entry(seq: u64, error: Option<&str>) -> ListEntry {
        ListEntry {
            seq,
            acked: seq == 1,
            bytes: 321,
            gtid: Some("0-1-7".into()),
            time: Some("2026-11-27T13:03:51Z".into()),
            rows: 2,
            statements: 1,
            tables: vec!["shop.orders".into(), "shop.items".into()],
            error: error.map(String::from),
        }
    }

    /// The exact bytes scripts read (the layouts of issue 14's starting point).
    #[test]
    fn the_list_and_stats_tables_keep_their_layout() {
        let list = printed(|out| {
            print_list(
                out,
                &[entry(1, None), entry(12345, Some("checksum mismatch"))],
            )
            .unwrap()
        });
        assert_eq!(
            list,
            "       seq  acked  gtid                      time (UTC)              rows   ddl      bytes  tables\n\
             \x20        1  true   0-1-7                     2026-11-27T13:03:51Z       2     1        321  shop.orders,shop.items\n\
             \x20    12345  false  DAMAGED: checksum mismatch\n"
        );
        let stats = StatsView {
            stats: sdl_wal::WalStats {
                wal_id: "w-1".into(),
                first_seq: None,
                last_seq: 9,
                acked_seq: 9,
                records: 0,
                unacked_records: 0,
                bytes: 0,
                unacked_bytes: 0,
                oldest_unacked_age_ms: Some(1234),
                ingest_position: None,
                disk_bytes: 4096,
            },
            wal_format: Some(4),
        };
        assert_eq!(
            printed(|out| print_stats(out, &stats).unwrap()),
            "wal id                     w-1\n\
             wal format version         4\n\
             first sequence             -\n\
             last sequence              9\n\
             acknowledged               9\n\
             records                    0\n\
             unacknowledged records     0\n\
             bytes                      0\n\
             unacknowledged bytes       0\n\
             oldest unacknowledged age  1.2 s\n\
             ingest position            -\n\
             disk usage (bytes)         4096\n"
        );
    }

    #[test]
    fn show_and_verify_keep_their_text() {
        let record = ShowRecord {
            entry: entry(3, None),
            transaction: Some(TransactionView {
                gtid: "0-1-7".into(),
                time: "2026-11-27T13:03:51Z".into(),
                position_after: "0-1-7".into(),
                first_change: 2,
                ends_transaction: false,
                documents: vec![serde_json::json!({"_id": "default/0-1-7:2"})],
            }),
        };
        let shown = printed(|out| print_show(out, &record).unwrap());
        let (_, text) = shown.split_once("shop.items\n").unwrap();
        assert_eq!(
            text,
            "\nposition after: 0-1-7\n\
             fragment of transaction 0-1-7: changes 2..3 (more follow)\n\
             change documents, as MongoDB holds them:\n\
             {\n  \"_id\": \"default/0-1-7:2\"\n}\n"
        );
        let report = |checked_from, damaged| VerifyReport {
            checked_from,
            checked_to: 6,
            damaged,
        };
        let verified = |r: &VerifyReport| printed(|out| print_verify(out, r).unwrap());
        assert_eq!(
            verified(&report(Some(2), vec![])),
            "ok: records 2 to 6 verified, none damaged\n"
        );
        assert_eq!(
            verified(&report(None, vec![])),
            "ok: the WAL holds no records (the next one will be 7)\n"
        );
        let damaged = vec![Damaged {
            seq: 4,
            error: "bad frame".into(),
        }];
        assert_eq!(
            verified(&report(Some(2), damaged)),
            "DAMAGED record 4: bad frame\n1 damaged record(s)\n"
        );
    }
}
