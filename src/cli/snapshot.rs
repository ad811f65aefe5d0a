//! `sdl snapshot [--config F] TABLE...`: queues a snapshot of existing rows, for a running or a
//! stopped service.
//!
//! Guarantees:
//! - Nothing is queued for a TABLE argument that is not a `db.table` pattern, nor, when the
//!   source answers, for a pattern that names no table or a table without a key sdl can chunk
//!   by: the command exits 2 naming each such table and the fix. When no server of `source.url`
//!   answers (or this shell lacks the service's password), it says so and queues anyway: the
//!   service checks again when it takes the request, and refuses it loudly (ERROR log,
//!   `/status`, the file renamed `*.refused`) if it is bad.
//! - A request is queued whole or not at all (`crate::source::snapshot::requests`), and exit 0
//!   means it is queued. The command then tells whether a running service took it within 10 s,
//!   or that it starts with the next `sdl run`; a running service is recognised by the lock it
//!   holds on the WAL, without opening the WAL (which would wait for, or disturb, nothing).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Config, SourceConfig, TablePattern};
use crate::service::RunError;
use crate::source::snapshot::requests::{self, SnapshotRequest};
use crate::source::snapshot::select::{resolve_tables, snapshot_key};
use crate::source::{self, SourceError};
use crate::{messages, redact, ExitCode};

/// How long the command waits for a running service to take the request.
const TAKE_WAIT: Duration = Duration::from_secs(10);

/// Runs the command; returns the process exit code (errors print as `sdl: error: ...`).
pub fn run(config: &Path, tables: &[String]) -> u8 {
    match run_inner(config, tables) {
        Ok(code) => code,
        Err(RunError { code, error }) => {
            eprintln!(
                "sdl: error: {}",
                redact::redact_error(&messages::error_chain(&error))
            );
            code as u8
        }
    }
}

fn run_inner(config_path: &Path, tables: &[String]) -> Result<u8, RunError> {
    let config = Config::load(config_path).map_err(RunError::config)?;
    if tables.is_empty() {
        return Err(RunError::config(anyhow::anyhow!(
            "name the tables to snapshot: sdl snapshot --config FILE db.table [db.* ...]"
        )));
    }
    for table in tables {
        TablePattern::parse(table).map_err(|e| RunError::config(anyhow::anyhow!("{e}")))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            RunError::failure(anyhow::Error::from(e).context("starting the async runtime"))
        })?;
    let checked = runtime.block_on(check_tables(&config.source, tables))?;
    let request = requests::queue(&config.wal.dir, tables).map_err(|e| {
        RunError::failure(anyhow::Error::from(e).context(format!(
            "writing the snapshot request into {} (wal.dir): the user running `sdl snapshot` must be able to write there (run it as the service's user, or as root)",
            requests::requests_dir(&config.wal.dir).display()
        )))
    })?;
    print_queued(&request, checked.as_deref());
    Ok(report_taken(&config.wal.dir, &request))
}

/// Checks `patterns` on the first server of `source.url` that answers: the tables matched, each
/// with a key. `Ok(None)` when no server could be asked (a warning is printed).
async fn check_tables(
    cfg: &SourceConfig,
    patterns: &[String],
) -> Result<Option<Vec<String>>, RunError> {
    let mut unreachable = Vec::new();
    for index in 0..cfg.server_count() {
        let server = cfg.for_server(index);
        let mut conn = match source::login(&server).await {
            Ok(conn) => conn,
            Err(e) => {
                unreachable.push(e.to_string());
                continue;
            }
        };
        let checked = check_on(&mut conn, patterns).await;
        let _ = conn.disconnect().await;
        match checked {
            Err(Checked::Interrupted(e)) => unreachable.push(e),
            Err(Checked::Failed(failure)) => return Err(failure),
            Ok(tables) => return Ok(Some(tables)),
        }
    }
    eprintln!(
        "sdl: warning: the tables were not checked: no server of source.url could be asked ({}). The request is queued anyway: the service checks the tables when it takes it, and refuses it (logged at ERROR, shown in /status) if one does not exist or has no key",
        redact::redact_error(&unreachable.join("; "))
    );
    Ok(None)
}

/// Why a check on one server gave no answer.
enum Checked {
    /// The connection broke or the server said "not now": the next server is asked.
    Interrupted(String),
    Failed(RunError),
}

/// The tables `patterns` match on `conn`, each with a usable key; every refusal is reported.
async fn check_on(
    conn: &mut mysql_async::Conn,
    patterns: &[String],
) -> Result<Vec<String>, Checked> {
    let refuse = |e: SourceError| match e {
        SourceError::Transient(e) => Checked::Interrupted(e),
        SourceError::SnapshotRefused { .. } => {
            Checked::Failed(RunError::config(anyhow::anyhow!("nothing was queued: {e}")))
        }
        other => Checked::Failed(RunError::failure(
            anyhow::Error::from(other).context("checking the tables on the source"),
        )),
    };
    let tables = resolve_tables(conn, patterns).await.map_err(refuse)?;
    let mut refusals = Vec::new();
    for (database, table) in &tables {
        match snapshot_key(conn, database, table).await {
            Ok(_) => {}
            Err(e @ SourceError::SnapshotRefused { .. }) => refusals.push(e.to_string()),
            Err(e) => return Err(refuse(e)),
        }
    }
    if !refusals.is_empty() {
        return Err(Checked::Failed(RunError::config(anyhow::anyhow!(
            "nothing was queued: {}",
            refusals.join("; ")
        ))));
    }
    Ok(tables
        .into_iter()
        .map(|(database, table)| format!("{database}.{table}"))
        .collect())
}

fn print_queued(request: &SnapshotRequest, checked: Option<&[String]>) {
    const SHOWN: usize = 10;
    match checked {
        Some(tables) => {
            let mut list = tables
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if tables.len() > SHOWN {
                list.push_str(&format!(" and {} more", tables.len() - SHOWN));
            }
            println!(
                "snapshot {} queued: {} table(s) ({list})",
                request.id,
                tables.len()
            );
        }
        None => println!(
            "snapshot {} queued: {} table(s) or pattern(s) ({}), not checked",
            request.id,
            request.tables.len(),
            request.tables.join(", ")
        ),
    }
}

/// Says whether a running service took the request (waiting up to [`TAKE_WAIT`]), or that none
/// runs. Returns the exit code: 0, or 2 if the running service refused the request.
fn report_taken(wal_dir: &Path, request: &SnapshotRequest) -> u8 {
    if !service_running(wal_dir) {
        println!("sdl is not running with this WAL: the snapshot starts with the next `sdl run`");
        return 0;
    }
    let file = requests::requests_dir(wal_dir).join(format!("{}.json", request.id));
    let refused_reason = PathBuf::from(format!("{}.refused.reason", file.display()));
    let deadline = Instant::now() + TAKE_WAIT;
    loop {
        if let Ok(reason) = std::fs::read_to_string(&refused_reason) {
            if !file.exists() {
                eprintln!(
                    "sdl: error: the running service refused snapshot {}: {}",
                    request.id,
                    reason.trim()
                );
                return ExitCode::Config as u8;
            }
        }
        if !file.exists() {
            println!("taken by the running service");
            return 0;
        }
        if Instant::now() >= deadline {
            println!(
                "not taken yet: the running service checks every few seconds (the request waits in {}; /status shows the snapshot once it starts)",
                file.display()
            );
            return 0;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether an sdl holds the WAL in `wal_dir` (sled's lock on its `db` file), found without
/// opening the WAL.
fn service_running(wal_dir: &Path) -> bool {
    std::fs::File::open(wal_dir.join("db"))
        .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)))
}
