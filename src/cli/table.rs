//! The tables `sdl wal stats`, `list` and `show` print: fixed-width columns, written with `format!`
//! widths (docs/decisions.md says why no table crate).

use std::io::Write;

use crate::wal_view::{ListEntry, StatsView};

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
