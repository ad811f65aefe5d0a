//! The ingester's snapshot stage: reads the tables of the snapshot plan in chunks by key, on a
//! second connection to the server the stream follows, and places each chunk in the WAL between
//! stream transactions at the one point where its rows are exactly the rows' state
//! (docs/decisions.md, "Initial snapshot").
//!
//! Guarantees:
//! - **No gap, no overlap.** A chunk's window opens at a transaction boundary of the stream (its
//!   low watermark: the ingester's own position, so everything before it is ahead of the chunk in
//!   the WAL); the chunk query runs; then the server's GTID position is read (the high watermark:
//!   every transaction whose rows the query saw is in it, since the binlog is written before the
//!   engine commits). The chunk is appended right after the stream transaction that brings the
//!   ingester's position to contain the high watermark, without every row whose key a stream
//!   transaction in the window changed (their change documents carry them). Every row appended is
//!   therefore unchanged from the window's start to its place in the WAL: its image is the row's
//!   state at that place. Every DDL statement the stream reads makes the next chunk describe its
//!   table again (the chunk query names its columns). A DDL statement in the window, or a key the stream cannot show (a
//!   partial row image), discards the chunk, which is read again; so does a read that finds the
//!   table changed under it (a column dropped), after describing the table again (three such
//!   reads in a row refuse the table).
//! - **Resumable.** The plan (tables left, the key of the last row accounted for) is saved in
//!   the ingest position of every record appended after it changes (`crate::snapshot_plan`), so
//!   a restart resumes after the last row the WAL holds; an unsaved chunk is read again.
//! - **Bounded memory.** A table's first chunk reads 100 rows; later chunks read as many rows
//!   as fit 32 MiB at the rows' measured size, at most `source.snapshot_chunk_rows`, so a table of
//!   large rows never holds `snapshot_chunk_rows` of them in memory at once.
//! - **Gentle and visible.** One chunk of `source.snapshot_chunk_rows` rows is read at a time,
//!   paced by `snapshot_rows_per_second` / `snapshot_bytes_per_second`; progress is published in
//!   `/status` (`snapshot`), the `sdl_snapshot_*` metrics and a log line per table on
//!   `sdl::snapshot` (start, every 10 s, end). A table that cannot be read soundly (no usable key,
//!   gone, its key changed) is refused at ERROR and shown in `/status`, never skipped quietly.
//!
//! `read` reads a chunk with values exactly as the binlog decoder gives them; `select` chooses
//! tables and keys; `requests` holds `sdl snapshot` requests until the plan saved in the WAL
//! holds them.
//!
//! This file is long because the window's whole life (open, read, watch the stream, place the
//! chunk) and the plan it changes are one state machine, and splitting it would spread the
//! ordering argument above over several files.

pub mod read;
pub mod requests;
pub mod select;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use self::read::SnapshotTable;
use super::connect::connect;
use super::decode::FragmentLimits;
use super::SourceError;
use crate::config::SourceConfig;
use crate::event::{Change, SnapshotRow, SourceTransaction, Table, Value};
use crate::flavor::Flavor;
use crate::gtid::{not_contained, position_variable, snapshot_suffix, Position, ResumePoint};
use crate::snapshot_plan::{SnapshotPlan, TableTask};
use crate::telemetry::{IngestStatus, RefusedSnapshot, SnapshotState};

/// How often `wal.dir/snapshot-requests` is looked at for `sdl snapshot` requests.
const REQUEST_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How often a table's progress is logged while it is read.
const PROGRESS_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// How long a chunk may wait for the stream to reach its high watermark before that is logged
/// (again every as long).
const STALL_WARNING: Duration = Duration::from_secs(60);
/// Chunk reads of one table refused in a row (each after describing it again) before the table
/// is refused.
const MAX_READ_REFUSALS: u32 = 3;
/// Rows the first chunk of a table reads, before its rows' size is known (at most
/// `snapshot_chunk_rows`).
const FIRST_CHUNK_ROWS: usize = 100;
/// The most bytes of rows one chunk holds in memory (and in one WAL append): a table of large
/// rows is read in chunks of fewer rows.
const MAX_CHUNK_BYTES: usize = 32 << 20;
/// Every this many chunks discarded in a row, a WARN line says the snapshot is not moving on.
const DISCARDS_WARNED: u64 = 10;
/// How many refusals `/status` keeps.
const REFUSALS_SHOWN: usize = 16;

/// What the snapshot stage needs besides the plan.
#[derive(Debug, Clone)]
pub struct SnapshotSettings {
    pub chunk_rows: usize,
    /// 0: unlimited.
    pub rows_per_second: u64,
    /// 0: unlimited.
    pub bytes_per_second: u64,
    /// Where `sdl snapshot` leaves its requests (`wal.dir`).
    pub wal_dir: PathBuf,
    /// The most one WAL record holds (one sink batch): a chunk is split at these.
    pub fragments: FragmentLimits,
}

impl SnapshotSettings {
    pub fn new(source: &SourceConfig, wal_dir: PathBuf, fragments: FragmentLimits) -> Self {
        Self {
            chunk_rows: source.snapshot_chunk_rows.max(1),
            rows_per_second: source.snapshot_rows_per_second,
            bytes_per_second: source.snapshot_bytes_per_second,
            wal_dir,
            fragments,
        }
    }
}

/// What the ingester must write after the snapshot stage acted: records to append in order,
/// after the transaction last read (chunk records, or one record without rows that saves a plan
/// changed with nothing to write), and request files to remove once they are saved.
#[derive(Default)]
pub struct Emission {
    pub records: Vec<SourceTransaction>,
    /// `sdl snapshot` requests taken into the plan: their files go once the records are saved.
    pub taken: Vec<String>,
}

impl Emission {
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// A chunk read, waiting for the stream to reach its high watermark.
struct ChunkRead {
    rows: Vec<Vec<Value>>,
    high: Position,
    /// When the query ran (the records' commit time field).
    read_at: u32,
}

type ReadTask = JoinHandle<(Conn, Result<ChunkRead, SourceError>)>;

/// One chunk's window: from the stream position it opened at until the chunk is placed.
struct Window {
    table: Arc<SnapshotTable>,
    /// Keys (as JSON text) of the table's rows changed by stream transactions in the window.
    changed: HashSet<String>,
    read: Option<ReadTask>,
    done: Option<ChunkRead>,
    /// A DDL statement or an unreadable key in the window, or a query that found the table
    /// changed or gone: the chunk is read again, its table described again first.
    discard: Option<&'static str>,
    opened: Instant,
    /// The most rows the chunk query asked for: fewer read means the table ends.
    limit: usize,
}

/// The snapshot stage of one connection's life (a reconnect starts a new one from the plan saved
/// in the WAL).
pub struct Snapshotter {
    settings: SnapshotSettings,
    server: SourceConfig,
    flavor: Flavor,
    plan: SnapshotPlan,
    /// `"; snapshot <plan>"`, or empty when the plan is: appended to every position written.
    suffix: String,
    conn: Option<Conn>,
    /// The first table of the plan, described.
    table: Option<Arc<SnapshotTable>>,
    window: Option<Window>,
    next_chunk_at: Instant,
    next_request_check: Instant,
    /// This run's progress on the current table: when it began and rows written since.
    table_run: Option<(Instant, u64)>,
    last_progress_log: Instant,
    last_stall_warning: Option<Instant>,
    /// Chunk reads of the current table refused in a row, and the last reason.
    read_refusals: Option<(u32, String)>,
    /// Chunks discarded since one was placed.
    discards_in_a_row: u64,
    /// Rows the next chunk reads: `snapshot_chunk_rows`, fewer for large rows (see
    /// [`Snapshotter::size_next_chunk`]).
    next_chunk_rows: usize,
    state: watch::Sender<IngestStatus>,
}

impl Drop for Snapshotter {
    fn drop(&mut self) {
        if let Some(task) = self.window.as_mut().and_then(|w| w.read.take()) {
            task.abort();
        }
    }
}

impl Snapshotter {
    pub fn new(
        settings: SnapshotSettings,
        server: SourceConfig,
        flavor: Flavor,
        plan: SnapshotPlan,
        state: watch::Sender<IngestStatus>,
    ) -> Self {
        let now = Instant::now();
        let mut snapshotter = Self {
            settings,
            server,
            flavor,
            plan,
            suffix: String::new(),
            conn: None,
            table: None,
            window: None,
            next_chunk_at: now,
            next_request_check: now,
            table_run: None,
            last_progress_log: now,
            last_stall_warning: None,
            read_refusals: None,
            discards_in_a_row: 0,
            next_chunk_rows: FIRST_CHUNK_ROWS,
            state,
        };
        snapshotter.plan_changed();
        snapshotter.publish();
        snapshotter
    }

    /// Appends the plan to a position the stream produced (see `crate::snapshot_plan`).
    pub fn decorate(&self, position_after: &mut String) {
        position_after.push_str(&self.suffix);
    }

    /// When [`Snapshotter::wake`] has something to do: the next chunk or the next look for
    /// requests. `None` while a chunk's window is open (its read and the stream drive it).
    pub fn next_wakeup(&self) -> Option<Instant> {
        if self.window.is_some() || self.plan.is_empty() {
            return Some(self.next_request_check);
        }
        Some(self.next_chunk_at.min(self.next_request_check))
    }

    /// Looks for requests and starts the next chunk when their times have come. Only called at a
    /// transaction boundary of the stream (`at_boundary`); otherwise tried again shortly.
    pub async fn wake(
        &mut self,
        position: &Position,
        at_boundary: bool,
    ) -> Result<Emission, SourceError> {
        let now = Instant::now();
        if !at_boundary {
            // The stream is inside a transaction whose first part is already appended: a window
            // opened now would miss that part's keys, and a position saved now would split it.
            let retry = now + Duration::from_millis(20);
            self.next_request_check = self.next_request_check.max(retry);
            self.next_chunk_at = self.next_chunk_at.max(retry);
            return Ok(Emission::default());
        }
        self.warn_if_stalled(position);
        let mut emission = Emission::default();
        if now >= self.next_request_check {
            self.next_request_check = now + REQUEST_CHECK_INTERVAL;
            emission = self.take_requests(position).await?;
        }
        if self.window.is_none() && !self.plan.is_empty() && now >= self.next_chunk_at {
            if let Some(plan_record) = self.open_window(position).await? {
                emission.records.push(plan_record);
            }
        }
        self.publish();
        Ok(emission)
    }

    /// A chunk waiting long for the stream to reach its high watermark is said, not waited for
    /// quietly: the stream is far behind, or lacks a GTID domain of the server's position.
    fn warn_if_stalled(&mut self, position: &Position) {
        let Some(window) = &self.window else {
            return;
        };
        let Some(done) = &window.done else {
            return;
        };
        let waited = window.opened.elapsed();
        if waited < STALL_WARNING
            || self
                .last_stall_warning
                .is_some_and(|at| at.elapsed() < STALL_WARNING)
        {
            return;
        }
        self.last_stall_warning = Some(Instant::now());
        let missing = not_contained(position, &done.high).unwrap_or_default();
        warn!(target: "sdl::snapshot",
            waited = ?waited,
            "snapshot of {}.{}: a chunk read waits for the binlog stream to reach the position it was read at ({}): {missing}. It is placed once the stream gets there; if this repeats, the stream is far behind or does not carry a GTID domain of the server's position",
            window.table.table.database, window.table.table.name, done.high
        );
    }

    /// Waits for the chunk query in flight (pending forever when none is).
    pub async fn read_finished(&mut self) -> Result<(), SourceError> {
        let Some(task) = self.window.as_mut().and_then(|w| w.read.as_mut()) else {
            return std::future::pending().await;
        };
        let joined = task.await;
        let window = self.window.as_mut().expect("a read runs inside a window");
        window.read = None;
        let (conn, result) = joined.map_err(|e| {
            SourceError::Transient(format!("the snapshot's chunk query task failed: {e}"))
        })?;
        self.conn = Some(conn);
        match result {
            Ok(done) => {
                window.done = Some(done);
                self.read_refusals = None;
            }
            // The table changed under the read (a column or the table dropped, renamed): the
            // chunk is read again after the table is described anew, and a table that can no
            // longer be described is refused then. The same refusal again and again (a read that
            // cannot move on) refuses the table.
            Err(SourceError::SnapshotRefused { table, reason }) => {
                warn!(target: "sdl::snapshot",
                    "snapshot of {table}: the chunk read failed ({reason}); describing the table again"
                );
                window.discard = Some("the table changed under the read");
                let count = self.read_refusals.as_ref().map_or(0, |(n, _)| *n) + 1;
                self.read_refusals = Some((count, reason));
            }
            Err(e) => return Err(e),
        }
        self.publish();
        Ok(())
    }

    /// Watches a transaction (or fragment) the stream read, before it is appended: the keys it
    /// changes in the table of the open window, and DDL.
    pub fn observe(&mut self, transaction: &SourceTransaction) {
        let Some(window) = self.window.as_mut() else {
            return;
        };
        for change in &transaction.changes {
            match change {
                Change::Statement(_) => {
                    // Any DDL may have changed the table's shape or its key.
                    window.discard = Some("a DDL statement arrived in its window");
                }
                Change::Row(row)
                    if row.table.database == window.table.table.database
                        && row.table.name == window.table.table.name =>
                {
                    let Some(indexes) = key_indexes(&window.table.table, &row.table) else {
                        window.discard = Some("the stream's rows of the table lack a key column");
                        continue;
                    };
                    for image in [&row.before, &row.after].into_iter().flatten() {
                        let key: Vec<&Value> = indexes.iter().map(|&i| &image[i]).collect();
                        if key.iter().any(|v| **v == Value::Absent) {
                            window.discard =
                                Some("a row image in its window lacks a key column (binlog_row_image is not FULL)");
                            continue;
                        }
                        window.changed.insert(key_text(key.into_iter()));
                    }
                }
                _ => {}
            }
        }
    }

    /// [`Snapshotter::place_chunk`] when the stream is at a transaction boundary; nothing
    /// otherwise (a chunk is never placed inside a transaction).
    pub fn place_chunk_at(&mut self, position: &Position, at_boundary: bool) -> Emission {
        if at_boundary {
            self.place_chunk(position)
        } else {
            Emission::default()
        }
    }

    /// A DDL statement was read: it may have changed the table's columns or key, so the next
    /// chunk describes it again, and no chunk placed after the statement is read with the
    /// columns from before it (the chunk query names its columns).
    pub fn forget_schema(&mut self) {
        self.table = None;
    }

    /// Places the chunk read when the stream, now at `position` (a transaction boundary), holds
    /// its high watermark; or drops a chunk whose window saw DDL.
    pub fn place_chunk(&mut self, position: &Position) -> Emission {
        let Some(window) = self.window.as_ref() else {
            return Emission::default();
        };
        if let Some(reason) = window.discard {
            if window.read.is_none() {
                let table = window.table.table.clone();
                self.window = None;
                // The table's shape may have changed: describe it again.
                self.table = None;
                crate::telemetry::metrics().snapshot_chunks_discarded.inc();
                self.discards_in_a_row += 1;
                if self.discards_in_a_row.is_multiple_of(DISCARDS_WARNED) {
                    warn!(target: "sdl::snapshot",
                        discarded = self.discards_in_a_row,
                        "snapshot of {}.{}: chunk discarded ({reason}); {} chunks in a row discarded: DDL (or lost connections) keep landing in the chunks' windows, so the snapshot does not move on",
                        table.database, table.name, self.discards_in_a_row
                    );
                } else {
                    info!(target: "sdl::snapshot",
                        "snapshot of {}.{}: chunk discarded ({reason}); reading it again",
                        table.database, table.name
                    );
                }
            }
            return Emission::default();
        }
        let Some(done) = window.done.as_ref() else {
            return Emission::default();
        };
        if not_contained(position, &done.high).is_some() {
            return Emission::default();
        }
        let mut window = self.window.take().expect("checked above");
        let done = window.done.take().expect("checked above");
        self.emit(window, done, position)
    }

    /// The chunk's rows that no stream transaction of its window changed, as records after
    /// `position`, and the plan moved past every row read.
    fn emit(&mut self, window: Window, done: ChunkRead, position: &Position) -> Emission {
        let Window {
            table,
            changed,
            opened,
            limit,
            ..
        } = window;
        self.discards_in_a_row = 0;
        let read_rows = done.rows.len();
        let table_ends = read_rows < limit;
        let last_key = done.rows.last().map(|row| read::key_of(&table, row));
        let snapshot: Arc<str> = Arc::from(self.plan.tables[0].snapshot.as_str());
        let rows: Vec<Vec<Value>> = if changed.is_empty() {
            done.rows
        } else {
            done.rows
                .into_iter()
                .filter(|row| !changed.contains(&key_text(read::key_of(&table, row).iter())))
                .collect()
        };
        let kept = rows.len();
        let mut records = Vec::new();
        let mut bytes = 0usize;
        let mut current: Vec<Change> = Vec::new();
        let mut current_bytes = 0usize;
        let limits = self.settings.fragments;
        let total = rows.len();
        for (index, values) in rows.into_iter().enumerate() {
            let change = Change::Snapshot(SnapshotRow {
                snapshot: snapshot.clone(),
                table: table.table.clone(),
                values,
            });
            let size = change.approximate_size();
            current_bytes += size;
            bytes += size;
            current.push(change);
            let last = index + 1 == total;
            if last || current.len() >= limits.max_changes || current_bytes >= limits.max_bytes {
                let record_key = match current.last() {
                    Some(Change::Snapshot(row)) => read::key_of(&table, &row.values),
                    _ => unreachable!("a chunk record holds snapshot rows"),
                };
                let count = current.len() as u64;
                let task = &mut self.plan.tables[0];
                task.rows += count;
                task.after = Some(if last {
                    last_key.clone().unwrap_or(record_key)
                } else {
                    record_key
                });
                if last && table_ends {
                    self.finish_table();
                } else {
                    self.plan_changed();
                }
                let point = ResumePoint {
                    position: position.clone(),
                    partial: None,
                    snapshot: Some(self.plan.clone()),
                };
                records.push(SourceTransaction {
                    gtid: format!("snapshot {snapshot}"),
                    timestamp: done.read_at,
                    position_after: point.to_string(),
                    first_change: 0,
                    ends_transaction: true,
                    changes: std::mem::take(&mut current),
                });
                current_bytes = 0;
                if let Some((_, written)) = self.table_run.as_mut() {
                    *written += count;
                }
            }
        }
        let mut emission = Emission::default();
        if records.is_empty() {
            // Nothing to write (an empty read, or every row changed in the window): the plan
            // still moves past the rows read.
            if let Some(key) = last_key {
                self.plan.tables[0].after = Some(key);
            }
            if table_ends {
                self.finish_table();
            } else {
                self.plan_changed();
            }
            records.push(self.plan_record(position));
        }
        let m = crate::telemetry::metrics();
        m.snapshot_chunks.inc();
        m.snapshot_rows.inc_by(kept as u64);
        self.state
            .send_modify(|s| s.snapshot.rows_written += kept as u64);
        self.pace(opened, read_rows, bytes);
        if let Some(row_bytes) = bytes.checked_div(kept) {
            self.size_next_chunk(row_bytes);
        }
        self.log_progress(false);
        emission.records = records;
        self.publish();
        emission
    }

    /// Waits before the next chunk so that the limits hold on average: a chunk of `rows` rows
    /// and `bytes` bytes opened at `opened` allows the next one at `opened` plus their time at
    /// the limits.
    fn pace(&mut self, opened: Instant, rows: usize, bytes: usize) {
        let mut wait = Duration::ZERO;
        if self.settings.rows_per_second > 0 {
            wait = wait.max(Duration::from_secs_f64(
                rows as f64 / self.settings.rows_per_second as f64,
            ));
        }
        if self.settings.bytes_per_second > 0 {
            wait = wait.max(Duration::from_secs_f64(
                bytes as f64 / self.settings.bytes_per_second as f64,
            ));
        }
        self.next_chunk_at = (opened + wait).max(Instant::now());
    }

    /// The position `position` with the plan as it is now.
    fn position_text(&self, position: &Position) -> String {
        let mut text = position.to_string();
        self.decorate(&mut text);
        text
    }

    /// A record without rows that saves the plan as it is now, after `position`: the plan changed
    /// with nothing to write (a table ended on a chunk boundary, every row of a chunk changed in
    /// its window, a table refused, a request taken). A record, not only a position, so that
    /// MongoDB's offset takes the plan too (the forwarder commits offsets with records).
    fn plan_record(&self, position: &Position) -> SourceTransaction {
        SourceTransaction {
            gtid: "snapshot plan".into(),
            timestamp: unix_now(),
            position_after: self.position_text(position),
            first_change: 0,
            ends_transaction: true,
            changes: Vec::new(),
        }
    }

    /// Opens the next chunk's window and starts its query. Returns a record saving the plan when
    /// it changed without a chunk (a table refused).
    async fn open_window(
        &mut self,
        position: &Position,
    ) -> Result<Option<SourceTransaction>, SourceError> {
        let mut changed = false;
        if let Some((count, reason)) = self.read_refusals.take() {
            if count >= MAX_READ_REFUSALS {
                let table = self.plan.tables[0].name();
                self.refuse_first(
                    &table,
                    &format!("its chunk read failed {count} times in a row: {reason}"),
                );
                changed = true;
            } else {
                self.read_refusals = Some((count, reason));
            }
        }
        while !self.plan.is_empty() && self.table.is_none() {
            match self.describe_first().await {
                Ok(()) => {}
                Err(SourceError::SnapshotRefused { table, reason }) => {
                    self.refuse_first(&table, &reason);
                    changed = true;
                }
                Err(e) => return Err(e),
            }
        }
        let Some(table) = self.table.clone() else {
            return Ok(changed.then(|| self.plan_record(position)));
        };
        let mut conn = self.take_conn().await?;
        let after = self.plan.tables[0].after.clone();
        let limit = self.next_chunk_rows;
        let flavor = self.flavor;
        let reading = table.clone();
        let low = position.clone();
        let task = tokio::spawn(async move {
            let result =
                read_chunk_and_watermark(&mut conn, flavor, &reading, low, after, limit).await;
            (conn, result)
        });
        self.window = Some(Window {
            table,
            changed: HashSet::new(),
            read: Some(task),
            done: None,
            discard: None,
            opened: Instant::now(),
            limit,
        });
        Ok(changed.then(|| self.plan_record(position)))
    }

    /// Chooses the first table's key and describes it; a table that cannot be read soundly is
    /// `SnapshotRefused`.
    async fn describe_first(&mut self) -> Result<(), SourceError> {
        let mut conn = self.take_conn().await?;
        let result = self.describe_on(&mut conn).await;
        self.conn = Some(conn);
        result
    }

    async fn describe_on(&mut self, conn: &mut Conn) -> Result<(), SourceError> {
        let task = &self.plan.tables[0];
        let (database, name) = (task.database.clone(), task.table.clone());
        let key = select::snapshot_key(conn, &database, &name).await?;
        if !task.key.is_empty() && !same_names(&task.key, &key) {
            return Err(SourceError::SnapshotRefused {
                table: task.name(),
                reason: format!(
                    "its key changed from ({}) to ({}) during the snapshot, so the rows still to read cannot be told from those read; run `sdl snapshot {}` again",
                    task.key.join(", "),
                    key.join(", "),
                    task.name()
                ),
            });
        }
        let key_order = key_order(conn, &database, &name, &key).await?;
        let task = &self.plan.tables[0];
        if !task.key_order.is_empty() && task.key_order != key_order {
            return Err(SourceError::SnapshotRefused {
                table: task.name(),
                reason: format!(
                    "its key's order changed from ({}) to ({key_order}) during the snapshot (a type or collation change), so the rows still to read cannot be told from those read; run `sdl snapshot {}` again",
                    task.key_order,
                    task.name()
                ),
            });
        }
        let described = read::describe(conn, self.flavor, &database, &name, &key).await?;
        let task = &mut self.plan.tables[0];
        let resuming = task.after.is_some() || task.rows > 0;
        task.key = key;
        task.key_order = key_order;
        if resuming {
            info!(target: "sdl::snapshot",
                "snapshot of {}.{}: resuming after {} rows written (snapshot {})",
                database, name, task.rows, task.snapshot
            );
        } else {
            info!(target: "sdl::snapshot",
                "snapshot of {}.{}: starting, about {} rows, key ({}) (snapshot {})",
                database,
                name,
                described.rows_estimate.map_or("an unknown number of".to_string(), |n| n.to_string()),
                task.key.join(", "),
                task.snapshot
            );
        }
        self.table = Some(Arc::new(described));
        self.table_run = Some((Instant::now(), 0));
        self.next_chunk_rows = FIRST_CHUNK_ROWS.min(self.settings.chunk_rows);
        self.last_progress_log = Instant::now();
        Ok(())
    }

    /// The snapshot connection, opened (and prepared) when there is none.
    async fn take_conn(&mut self) -> Result<Conn, SourceError> {
        if let Some(conn) = self.conn.take() {
            return Ok(conn);
        }
        let (mut conn, _) = connect(&self.server).await?;
        read::prepare_session(&mut conn).await?;
        Ok(conn)
    }

    /// Drops the first table from the plan, loudly.
    fn refuse_first(&mut self, table: &str, reason: &str) {
        error!(target: "sdl::snapshot",
            "snapshot of {table}: refused, not read: {reason}"
        );
        self.plan.tables.remove(0);
        self.table = None;
        self.table_run = None;
        self.read_refusals = None;
        self.note_refusal(table, reason);
        self.plan_changed();
    }

    fn note_refusal(&mut self, table: &str, reason: &str) {
        let refused = RefusedSnapshot {
            table: table.to_string(),
            reason: crate::messages::tidy(reason),
        };
        self.state.send_modify(|s| {
            s.snapshot.refused.push(refused);
            let excess = s.snapshot.refused.len().saturating_sub(REFUSALS_SHOWN);
            s.snapshot.refused.drain(..excess);
        });
    }

    /// Sizes the next chunk from the rows just read (`row_bytes` on average): as many rows as
    /// fit [`MAX_CHUNK_BYTES`], at most `snapshot_chunk_rows`, at least one.
    fn size_next_chunk(&mut self, row_bytes: usize) {
        self.next_chunk_rows = chunk_rows_for(row_bytes, self.settings.chunk_rows);
    }

    /// The first table is read whole: logged, and dropped from the plan.
    fn finish_table(&mut self) {
        self.log_progress(true);
        self.plan.tables.remove(0);
        self.table = None;
        self.table_run = None;
        self.plan_changed();
    }

    fn plan_changed(&mut self) {
        self.suffix = snapshot_suffix(&self.plan);
        crate::telemetry::metrics()
            .snapshot_tables_remaining
            .set(self.plan.tables.len() as i64);
    }

    /// The progress line of the first table: every [`PROGRESS_LOG_INTERVAL`], and at its end.
    fn log_progress(&mut self, finished: bool) {
        let Some(task) = self.plan.tables.first() else {
            return;
        };
        if !finished && self.last_progress_log.elapsed() < PROGRESS_LOG_INTERVAL {
            return;
        }
        self.last_progress_log = Instant::now();
        let estimate = self.table.as_ref().and_then(|t| t.rows_estimate);
        let (rate, eta) = self.rate_and_eta(task.rows, estimate);
        if finished {
            info!(target: "sdl::snapshot",
                "snapshot of {}: done, {} rows (snapshot {})",
                task.name(), task.rows, task.snapshot
            );
        } else {
            info!(target: "sdl::snapshot",
                "snapshot of {}: {}/{} rows, {:.0} rows/s, ETA {}",
                task.name(),
                task.rows,
                estimate.map_or("?".to_string(), |n| n.to_string()),
                rate,
                eta.map_or("unknown".to_string(), |s| format!("{s} s"))
            );
        }
    }

    /// Rows per second in this run, and the seconds left at that rate.
    fn rate_and_eta(&self, rows_done: u64, estimate: Option<u64>) -> (f64, Option<u64>) {
        let Some((since, written)) = self.table_run else {
            return (0.0, None);
        };
        let seconds = since.elapsed().as_secs_f64();
        if written == 0 || seconds <= 0.0 {
            return (0.0, None);
        }
        let rate = written as f64 / seconds;
        let eta = estimate.map(|n| (n.saturating_sub(rows_done) as f64 / rate).ceil() as u64);
        (rate, eta)
    }

    /// Publishes the snapshot's progress.
    fn publish(&self) {
        let task = self.plan.tables.first();
        let estimate = self.table.as_ref().and_then(|t| t.rows_estimate);
        let state = match (&self.window, task) {
            (_, None) => SnapshotState::Idle,
            (Some(w), _) if w.done.is_some() => SnapshotState::WaitingForStream,
            (Some(_), _) => SnapshotState::Reading,
            (None, _) if self.next_chunk_at > Instant::now() => SnapshotState::Throttled,
            (None, _) => SnapshotState::Reading,
        };
        let eta = task.and_then(|t| self.rate_and_eta(t.rows, estimate).1);
        publish_plan(&self.state, &self.plan, state, estimate, eta);
    }

    /// Takes the `sdl snapshot` requests waiting in `wal.dir` into the plan. A request whose
    /// tables cannot be read soundly is refused whole (its file renamed, the reason logged and
    /// shown); a request the saved plan already holds (a crash before its file was removed) is
    /// only removed.
    async fn take_requests(&mut self, position: &Position) -> Result<Emission, SourceError> {
        let dir = &self.settings.wal_dir.clone();
        let pending = match requests::pending(dir) {
            Ok(pending) => pending,
            Err(e) => {
                // Said at every look (every few seconds) until someone acts: a request is never
                // passed over quietly.
                error!(target: "sdl::snapshot", error = %e, dir = %dir.display(), "snapshot requests could not be read; fix or remove the file named, then queue its snapshot again");
                return Ok(Emission::default());
            }
        };
        let mut emission = Emission::default();
        for request in pending {
            if self.plan.taken.contains(&request.id) {
                if let Err(e) = requests::taken(dir, &request.id) {
                    warn!(target: "sdl::snapshot", error = %e, request = %request.id, "could not remove a snapshot request already taken");
                }
                continue;
            }
            let mut conn = self.take_conn().await?;
            let chosen = choose_tables(&mut conn, &request.tables).await;
            self.conn = Some(conn);
            match chosen {
                Ok(tables) => {
                    info!(target: "sdl::snapshot",
                        "snapshot {} requested: {} table(s): {}",
                        request.id,
                        tables.len(),
                        tables.iter().map(|(d, t)| format!("{d}.{t}")).collect::<Vec<_>>().join(", ")
                    );
                    for (database, table) in tables {
                        self.plan
                            .add(TableTask::new(&request.id, &database, &table));
                    }
                    self.plan.remember_taken(&request.id);
                    emission.taken.push(request.id);
                }
                Err(SourceError::SnapshotRefused { table, reason }) => {
                    let what = format!("request {} ({})", request.id, request.tables.join(" "));
                    error!(target: "sdl::snapshot",
                        "snapshot {what} refused: {table}: {reason}"
                    );
                    self.note_refusal(&table, &format!("{what}: {reason}"));
                    if let Err(e) =
                        requests::refused(dir, &request.id, &format!("{table}: {reason}"))
                    {
                        warn!(target: "sdl::snapshot", error = %e, request = %request.id, "could not set a refused snapshot request aside; it will be refused again");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !emission.taken.is_empty() {
            self.plan_changed();
            emission.records.push(self.plan_record(position));
        }
        Ok(emission)
    }
}

/// Publishes the plan saved in the WAL's position `saved` before the stage runs (at start-up,
/// while the source is still being connected), so that `/status` never shows a snapshot with
/// tables left as idle.
pub fn publish_saved_plan(state: &watch::Sender<IngestStatus>, saved: &str) {
    let Some(plan) = crate::gtid::split_snapshot_plan(saved)
        .1
        .and_then(|json| SnapshotPlan::from_json(json.trim()).ok())
    else {
        return;
    };
    let kind = if plan.is_empty() {
        SnapshotState::Idle
    } else {
        SnapshotState::Reading
    };
    publish_plan(state, &plan, kind, None, None);
    crate::telemetry::metrics()
        .snapshot_tables_remaining
        .set(plan.tables.len() as i64);
}

/// Publishes `plan`'s progress (its first table's) in `/status` `snapshot`.
fn publish_plan(
    state: &watch::Sender<IngestStatus>,
    plan: &SnapshotPlan,
    kind: SnapshotState,
    rows_estimate: Option<u64>,
    eta_seconds: Option<u64>,
) {
    let task = plan.tables.first();
    state.send_modify(|s| {
        let status = &mut s.snapshot;
        status.state = kind;
        status.id = task.map(|t| t.snapshot.clone());
        status.table = task.map(TableTask::name);
        status.rows_done = task.map_or(0, |t| t.rows);
        status.rows_estimate = rows_estimate;
        status.tables_left = plan.tables.len();
        status.eta_seconds = eta_seconds;
    });
}

/// How the key columns `key` of `db.table` order: each column's type and collation, as
/// information_schema shows them (`id int(11); k varchar(10) utf8mb4_bin`).
async fn key_order(
    conn: &mut Conn,
    database: &str,
    table: &str,
    key: &[String],
) -> Result<String, SourceError> {
    let query = "SELECT COLUMN_NAME, COLUMN_TYPE, COALESCE(COLLATION_NAME, '') \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?";
    let columns: Vec<(String, String, String)> = conn
        .exec(query, (database, table))
        .await
        .map_err(|e| super::error::query_error(query, e))?;
    let order: Vec<String> = key
        .iter()
        .map(|name| {
            columns
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or_else(
                    || format!("{name} missing"),
                    |(n, column_type, collation)| format!("{n} {column_type} {collation}"),
                )
                .trim_end()
                .to_string()
        })
        .collect();
    Ok(order.join("; "))
}

/// The tables `patterns` name, each with a usable key (else `SnapshotRefused`).
pub async fn choose_tables(
    conn: &mut Conn,
    patterns: &[String],
) -> Result<Vec<(String, String)>, SourceError> {
    let tables = select::resolve_tables(conn, patterns).await?;
    for (database, table) in &tables {
        select::snapshot_key(conn, database, table).await?;
    }
    Ok(tables)
}

/// The snapshot plan of every table `patterns` selects, under a new snapshot id.
pub async fn plan_for(conn: &mut Conn, patterns: &[String]) -> Result<SnapshotPlan, SourceError> {
    let id = select::new_snapshot_id(std::time::SystemTime::now());
    let mut plan = SnapshotPlan::default();
    for (database, table) in choose_tables(conn, patterns).await? {
        plan.add(TableTask::new(&id, &database, &table));
    }
    Ok(plan)
}

/// How long a chunk read waits for the source's commits up to its binlog end to become visible
/// before that is a transient error (the connection is then replaced, loudly).
const VISIBILITY_WAIT: Duration = Duration::from_secs(30);

/// Reads a chunk so that it sees every transaction the stream has already read (the window's
/// low watermark `low`), then the server's GTID position (the high watermark: every transaction
/// whose rows the query saw is in it, since the binlog is written before the engine commit makes
/// rows visible).
///
/// The low side needs care, because a transaction reaches the binlog, and the stream, just
/// *before* its rows become visible. MariaDB: the read runs in `START TRANSACTION WITH
/// CONSISTENT SNAPSHOT`, whose view is exactly the binlog up to `Binlog_snapshot_file/position`;
/// a view that ends before the binlog end seen just before it (`SHOW MASTER STATUS`, which
/// covers everything the stream read) is let go and taken again. MySQL: the read starts once
/// `gtid_executed` (updated as transactions commit) holds `low`.
async fn read_chunk_and_watermark(
    conn: &mut Conn,
    flavor: Flavor,
    table: &SnapshotTable,
    low: Position,
    after: Option<Vec<Value>>,
    limit: usize,
) -> Result<ChunkRead, SourceError> {
    let read_at = unix_now();
    match flavor {
        Flavor::Mariadb => begin_view_past_binlog_end(conn).await?,
        Flavor::Mysql => wait_until_executed(conn, &low).await?,
    }
    let read = async {
        let rows = read::read_chunk(conn, table, after.as_deref(), limit).await?;
        let high = server_position(conn, flavor).await?;
        Ok::<_, SourceError>((rows, high))
    }
    .await;
    if flavor == Flavor::Mariadb {
        // A read-only transaction: ending it cannot lose anything.
        let ended = run(conn, "COMMIT").await;
        if read.is_ok() {
            ended?;
        }
    }
    let (rows, high) = read?;
    Ok(ChunkRead {
        rows,
        high,
        read_at,
    })
}

/// MariaDB: begins a consistent-snapshot transaction whose view holds every transaction in the
/// binlog when it was called.
async fn begin_view_past_binlog_end(conn: &mut Conn) -> Result<(), SourceError> {
    let end = binlog_coordinates(conn, "SHOW MASTER STATUS", "File", "Position").await?;
    let started = Instant::now();
    loop {
        run(conn, "START TRANSACTION WITH CONSISTENT SNAPSHOT").await?;
        let view = binlog_snapshot(conn).await?;
        if view >= end {
            return Ok(());
        }
        run(conn, "COMMIT").await?;
        if started.elapsed() > VISIBILITY_WAIT {
            return Err(SourceError::Transient(format!(
                "the snapshot's consistent view stayed at binlog {view:?}, before the binlog end {end:?} seen {VISIBILITY_WAIT:?} earlier: the source's commits are not becoming visible"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A binlog file's sequence number and a position in it, comparable in binlog order.
type BinlogCoordinates = (u64, u64);

/// The sequence number of a binlog file name (`mysql-bin.000042` → 42).
fn binlog_sequence(file: &str) -> Result<u64, SourceError> {
    file.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| SourceError::Query {
            query: "SHOW MASTER STATUS".into(),
            detail: format!("binlog file name {file:?} does not end in a sequence number"),
        })
}

async fn binlog_coordinates(
    conn: &mut Conn,
    query: &str,
    file_column: &str,
    position_column: &str,
) -> Result<BinlogCoordinates, SourceError> {
    let row: Option<mysql_async::Row> = conn
        .query_first(query)
        .await
        .map_err(|e| super::error::query_error(query, e))?;
    let missing = || SourceError::Query {
        query: query.to_string(),
        detail: "no binlog file and position in the answer: is log_bin on?".into(),
    };
    let row = row.ok_or_else(missing)?;
    let file: String = row.get(file_column).ok_or_else(missing)?;
    let position: u64 = row.get(position_column).ok_or_else(missing)?;
    Ok((binlog_sequence(&file)?, position))
}

/// Where the consistent snapshot of this session's transaction sits in the binlog.
async fn binlog_snapshot(conn: &mut Conn) -> Result<BinlogCoordinates, SourceError> {
    let query = "SHOW SESSION STATUS WHERE Variable_name IN ('Binlog_snapshot_file', 'Binlog_snapshot_position')";
    let rows: Vec<(String, String)> = conn
        .query(query)
        .await
        .map_err(|e| super::error::query_error(query, e))?;
    let value = |name: &str| {
        rows.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (Some(file), Some(position)) = (
        value("Binlog_snapshot_file"),
        value("Binlog_snapshot_position"),
    ) else {
        return Err(SourceError::Query {
            query: query.into(),
            detail: "the server does not report where its consistent snapshot sits in the binlog"
                .into(),
        });
    };
    let position = position.trim().parse().map_err(|_| SourceError::Query {
        query: query.into(),
        detail: format!("Binlog_snapshot_position {position:?} is not a number"),
    })?;
    Ok((binlog_sequence(&file)?, position))
}

/// MySQL: waits until `gtid_executed` holds `low` (its transactions are committed, so visible).
async fn wait_until_executed(conn: &mut Conn, low: &Position) -> Result<(), SourceError> {
    let started = Instant::now();
    loop {
        let executed = server_position(conn, Flavor::Mysql).await?;
        let Some(missing) = not_contained(&executed, low) else {
            return Ok(());
        };
        if started.elapsed() > VISIBILITY_WAIT {
            return Err(SourceError::Transient(format!(
                "the snapshot waited {VISIBILITY_WAIT:?} for transactions the stream read to commit on the source: {missing}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The server's GTID position now (`gtid_binlog_pos` / `gtid_executed`).
async fn server_position(conn: &mut Conn, flavor: Flavor) -> Result<Position, SourceError> {
    let query = format!("SELECT @@GLOBAL.{}", position_variable(flavor));
    let text: Option<String> = conn
        .query_first(&query)
        .await
        .map_err(|e| super::error::query_error(&query, e))?;
    Ok(Position::parse(flavor, text.unwrap_or_default().trim())?)
}

async fn run(conn: &mut Conn, statement: &str) -> Result<(), SourceError> {
    conn.query_drop(statement)
        .await
        .map_err(|e| super::error::query_error(statement, e))
}

/// Rows of `row_bytes` each that fit [`MAX_CHUNK_BYTES`], between 1 and `chunk_rows`.
fn chunk_rows_for(row_bytes: usize, chunk_rows: usize) -> usize {
    (MAX_CHUNK_BYTES / row_bytes.max(1)).clamp(1, chunk_rows.max(1))
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

/// Where the snapshot's key columns sit in the stream's shape of the same table (names compared
/// as MySQL does, without case); `None` when one is missing.
fn key_indexes(snapshot: &Table, stream: &Table) -> Option<Vec<usize>> {
    snapshot
        .primary_key_names()
        .map(|name| {
            stream
                .columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(name))
        })
        .collect()
}

/// A key's values as comparable text.
fn key_text<'a>(values: impl Iterator<Item = &'a Value>) -> String {
    let values: Vec<&Value> = values.collect();
    serde_json::to_string(&values).expect("values always serialize")
}

fn same_names(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_of_large_rows_hold_fewer_rows() {
        assert_eq!(chunk_rows_for(100, 10_000), 10_000);
        assert_eq!(chunk_rows_for(1 << 20, 10_000), 32);
        assert_eq!(chunk_rows_for(64 << 20, 10_000), 1);
        assert_eq!(chunk_rows_for(0, 10_000), 10_000);
        assert_eq!(chunk_rows_for(100, 0), 1);
    }

    #[test]
    fn a_key_reads_the_same_as_text_whatever_its_values() {
        let a = key_text([Value::Int(1), Value::Text("x".into())].iter());
        let b = key_text([Value::Int(1), Value::Text("x".into())].iter());
        let c = key_text([Value::UInt(1), Value::Text("x".into())].iter());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
