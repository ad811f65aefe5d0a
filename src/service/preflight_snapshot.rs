//! The preflight line of `source.snapshot = "initial"`: the tables the initial snapshot would read
//! (`source.snapshot_tables` resolved on the source) and each one's key, so that `sdl check`
//! names a table sdl would refuse (no such table, a view, no primary key and no NOT NULL UNIQUE
//! key) before the first `sdl run` does.
//!
//! A refusal is a failure while the initial snapshot is still ahead (no WAL yet); once the WAL
//! exists the initial snapshot has been planned already and is never planned again, so a refusal
//! is only a warning then (`sdl snapshot` checks the tables it is given itself).

use crate::config::{Config, SnapshotMode};
use crate::source::snapshot::select::{resolve_tables, snapshot_key};
use crate::source::{self, SourceError};

use super::preflight_check::{Check, Verdict};

pub(super) const NAME: &str = "source: initial snapshot";

/// The check lines (none when `source.snapshot` is not `"initial"`).
pub(super) async fn snapshot_checks(config: &Config) -> Vec<Check> {
    if config.source.snapshot != SnapshotMode::Initial {
        return Vec::new();
    }
    let planned_already = crate::wal_view::is_wal_dir(&config.wal.dir);
    let cfg = &config.source;
    let mut conn = None;
    for index in 0..cfg.server_count() {
        if let Ok(c) = source::login(&cfg.for_server(index)).await {
            conn = Some(c);
            break;
        }
    }
    let Some(mut conn) = conn else {
        return vec![Check::new(
            NAME,
            Verdict::Warn,
            "not checked: no server of source.url answered (see the login check above)",
            "make the source reachable, then check again",
        )];
    };
    let selected = select(&mut conn, &cfg.snapshot_tables).await;
    let _ = conn.disconnect().await;
    match selected {
        Ok(tables) => {
            let shown: Vec<&str> = tables.iter().take(10).map(String::as_str).collect();
            let more = tables.len().saturating_sub(shown.len());
            let detail = format!(
                "snapshot: {} tables selected{}{}, each with a key{}",
                tables.len(),
                if tables.is_empty() {
                    String::new()
                } else {
                    format!(" ({}", shown.join(", "))
                },
                match (tables.is_empty(), more) {
                    (true, _) => String::new(),
                    (false, 0) => ")".into(),
                    (false, n) => format!(" and {n} more)"),
                },
                if planned_already {
                    " (the WAL exists: the initial snapshot was planned at the first start and is not repeated)"
                } else {
                    ""
                }
            );
            vec![Check::pass(NAME, detail)]
        }
        Err(refusals) => {
            let verdict = if planned_already {
                Verdict::Warn
            } else {
                Verdict::Fail
            };
            refusals
                .into_iter()
                .map(|refusal| {
                    let detail = if planned_already {
                        format!("{refusal} (the WAL exists: the initial snapshot was planned at the first start and is not repeated, so this matters only to `sdl snapshot`)")
                    } else {
                        format!("{refusal} (sdl run refuses to start with exit 2 until this is fixed)")
                    };
                    Check::new(NAME, verdict, detail, "")
                })
                .collect()
        }
    }
}

/// The selected tables as `db.table`, or every refusal (or the error that stopped the lookup).
async fn select(
    conn: &mut mysql_async::Conn,
    patterns: &[String],
) -> Result<Vec<String>, Vec<String>> {
    let tables = resolve_tables(conn, patterns)
        .await
        .map_err(|e| vec![e.to_string()])?;
    let mut refusals = Vec::new();
    for (database, table) in &tables {
        match snapshot_key(conn, database, table).await {
            Ok(_) => {}
            Err(e @ SourceError::SnapshotRefused { .. }) => refusals.push(e.to_string()),
            Err(e) => return Err(vec![format!("cannot check {database}.{table}: {e}")]),
        }
    }
    if refusals.is_empty() {
        Ok(tables
            .into_iter()
            .map(|(d, t)| format!("{d}.{t}"))
            .collect())
    } else {
        Err(refusals)
    }
}
