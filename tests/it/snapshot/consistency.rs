//! The initial snapshot is consistent and resumable (issue 16, "Done when"): tables with existing
//! rows (an integer primary key, a composite primary key, a NOT NULL UNIQUE key and no primary
//! key), snapshotted while a workload inserts, updates (keys too) and deletes their rows, through
//! a SIGKILL of sdl and a MongoDB outage in the middle, are rebuilt exactly from MongoDB: the
//! snapshot documents plus the change documents equal `SELECT *` at the end, whether every image
//! is applied first or each at its place in the stream, and no row is in a snapshot twice. The
//! same holds across a lost source connection, and a lost WAL directory (the new WAL resumes
//! from MongoDB's offset). A SIGTERM mid-snapshot resumes from the last
//! chunk: the second run reads only what the first did not write. A chunk whose window sees DDL
//! is discarded and read again. The strict rebuild itself is checked on planted documents: it
//! refuses an overlap and a gap.
//!
//! This file is long because the workload over the three key shapes, the tests it serves and the
//! check of the rebuild they rely on belong together.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mongodb::bson::{doc, Document};
use mysql_async::prelude::Queryable;

use crate::support::proxy::Mode;
use crate::support::relay::assert_documents_exactly_once;
use crate::support::snapshot::{
    assert_ids_unique, assert_offset_reaches, assert_rebuilds_equal,
    assert_snapshot_documents_well_formed, assert_tables_equal, changes_in_commit_order,
    count_documents, millis_since_epoch, rebuild_interleaved, rebuild_snapshot_first, select_keyed,
    snapshot_documents, snapshot_id_millis, snapshot_table, status_number, try_status,
    wait_snapshot_done_and_forwarded, wait_snapshot_idle, wait_snapshot_status, wait_with_sdl,
    Table,
};
use crate::support::{all_documents, Relay, RelayBuilder, Rng};

const TIMEOUT: Duration = Duration::from_secs(60);

/// The three tables of these tests. Each row is named by a slot (an integer) the table maps to
/// its key, so the workload keeps one kind of bookkeeping for all three.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// `app.items`: `id INT PRIMARY KEY`, key = the slot.
    Items,
    /// `app.lines`: `PRIMARY KEY (order_id, code)`, declared in the other order than the
    /// columns; key = (slot / 10, `c-<slot % 10>`).
    Lines,
    /// `app.tags`: no primary key, `tag VARCHAR NOT NULL UNIQUE`; key = `tag-<slot, 6 digits>`.
    Tags,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Items => "items",
            Kind::Lines => "lines",
            Kind::Tags => "tags",
        }
    }

    /// The key's columns, in key order.
    fn key(self) -> &'static [&'static str] {
        match self {
            Kind::Items => &["id"],
            Kind::Lines => &["order_id", "code"],
            Kind::Tags => &["tag"],
        }
    }

    fn create(self) -> &'static str {
        match self {
            Kind::Items => {
                "CREATE TABLE app.items (id INT NOT NULL PRIMARY KEY, name VARCHAR(64) NOT NULL, \
                 qty INT NOT NULL, price DECIMAL(10,2), note TEXT) ENGINE=InnoDB"
            }
            Kind::Lines => {
                "CREATE TABLE app.lines (code VARCHAR(16) NOT NULL, order_id INT NOT NULL, \
                 amount DECIMAL(12,2) NOT NULL, label VARCHAR(200), \
                 PRIMARY KEY (order_id, code)) ENGINE=InnoDB"
            }
            Kind::Tags => {
                "CREATE TABLE app.tags (tag VARCHAR(40) NOT NULL, uses BIGINT NOT NULL, \
                 info VARCHAR(200), UNIQUE KEY tag_unique (tag)) ENGINE=InnoDB"
            }
        }
    }

    /// The slots of the `rows` rows a table starts with: every other slot, so that inserts and
    /// key updates land between existing rows as well as past the last one.
    fn seed_slots(self, rows: i64) -> Vec<i64> {
        match self {
            Kind::Items | Kind::Tags => (1..=rows).map(|i| 2 * i).collect(),
            // Orders 1, 2, ... with the codes c-0, c-2, c-4, c-6 each.
            Kind::Lines => (0..rows).map(|i| (1 + i / 4) * 10 + 2 * (i % 4)).collect(),
        }
    }

    /// The slots inserts and key updates draw from (a quarter past the seeded rows).
    fn slot_range(self, seeded: i64) -> (i64, i64) {
        match self {
            Kind::Items | Kind::Tags => (1, 2 * seeded + seeded / 2),
            Kind::Lines => (10, (seeded / 4 + seeded / 16 + 1) * 10 + 9),
        }
    }

    /// `WHERE` condition naming the row of `slot`.
    fn key_condition(self, slot: i64) -> String {
        match self {
            Kind::Items => format!("id = {slot}"),
            Kind::Lines => format!("order_id = {} AND code = 'c-{}'", slot / 10, slot % 10),
            Kind::Tags => format!("tag = 'tag-{slot:06}'"),
        }
    }

    /// `SET` assignments moving a row to the key of `slot`.
    fn key_assignment(self, slot: i64) -> String {
        match self {
            Kind::Items => format!("id = {slot}"),
            Kind::Lines => format!("order_id = {}, code = 'c-{}'", slot / 10, slot % 10),
            Kind::Tags => format!("tag = 'tag-{slot:06}'"),
        }
    }

    /// A row for `slot` as `INSERT ... VALUES` values, columns in table order (non-ASCII text,
    /// NULLs and decimals included).
    fn values(self, slot: i64, salt: u64) -> String {
        match self {
            Kind::Items => format!(
                "({slot}, 'item-{slot}-é✓', {}, {}, {})",
                salt % 1000,
                if slot % 10 == 3 {
                    "NULL".to_string()
                } else {
                    format!("{}.{:02}", salt % 100_000, slot % 100)
                },
                if slot % 7 == 0 {
                    "NULL".to_string()
                } else {
                    format!("'note {salt} ü'")
                }
            ),
            Kind::Lines => format!(
                "('c-{}', {}, {}.{:02}, {})",
                slot % 10,
                slot / 10,
                salt % 10_000,
                salt % 100,
                if slot % 5 == 1 {
                    "NULL".to_string()
                } else {
                    format!("'label ✓ {salt}'")
                }
            ),
            Kind::Tags => format!(
                "('tag-{slot:06}', {}, {})",
                salt % 1_000_000_007,
                if slot % 4 == 1 {
                    "NULL".to_string()
                } else {
                    format!("'info ☃ {salt}'")
                }
            ),
        }
    }

    /// An update of the row's other columns that always changes it.
    fn update(self, slot: i64) -> String {
        let set = match self {
            Kind::Items => "qty = qty + 1, note = CONCAT(COALESCE(note, ''), '+')",
            Kind::Lines => "amount = amount + 1.25, label = CONCAT(COALESCE(label, ''), '*')",
            Kind::Tags => "uses = uses + 1",
        };
        format!(
            "UPDATE app.{} SET {set} WHERE {}",
            self.table(),
            self.key_condition(slot)
        )
    }
}

/// `CREATE TABLE` and the seed rows of `kind`, `rows` rows.
fn create_and_seed(kind: Kind, rows: i64) -> Vec<String> {
    let mut statements = vec![kind.create().to_string()];
    for batch in kind.seed_slots(rows).chunks(200) {
        let values: Vec<String> = batch
            .iter()
            .map(|&slot| kind.values(slot, slot as u64 * 7919))
            .collect();
        statements.push(format!(
            "INSERT INTO app.{} VALUES {}",
            kind.table(),
            values.join(",")
        ));
    }
    statements
}

/// One table's live rows, by slot.
struct LiveRows {
    kind: Kind,
    slots: Vec<i64>,
    used: HashSet<i64>,
    range: (i64, i64),
}

impl LiveRows {
    fn new(kind: Kind, seeded: i64) -> Self {
        let slots = kind.seed_slots(seeded);
        Self {
            kind,
            used: slots.iter().copied().collect(),
            slots,
            range: kind.slot_range(seeded),
        }
    }

    fn free_slot(&self, rng: &mut Rng) -> i64 {
        loop {
            let (low, high) = self.range;
            let slot = low + rng.below((high - low + 1) as u64) as i64;
            if !self.used.contains(&slot) {
                return slot;
            }
        }
    }

    /// Removes and returns a random live slot.
    fn take(&mut self, rng: &mut Rng) -> i64 {
        let i = rng.below(self.slots.len() as u64) as usize;
        let slot = self.slots.swap_remove(i);
        self.used.remove(&slot);
        slot
    }

    fn add(&mut self, slot: i64) {
        self.slots.push(slot);
        self.used.insert(slot);
    }
}

/// Transactions of one to three statements over the three tables: inserts (between existing
/// rows and past the last), updates, deletes and key updates (a row moved to another key,
/// before or behind the snapshot's progress), each changing exactly one row.
struct SnapshotWorkload {
    tables: Vec<LiveRows>,
    rng: Rng,
    row_changes: u64,
    transactions: u64,
}

impl SnapshotWorkload {
    fn new(seed: u64, seeded: &[(Kind, i64)]) -> Self {
        Self {
            tables: seeded
                .iter()
                .map(|&(kind, rows)| LiveRows::new(kind, rows))
                .collect(),
            rng: Rng::new(seed),
            row_changes: 0,
            transactions: 0,
        }
    }

    fn next_statement(&mut self) -> String {
        let rng = &mut self.rng;
        let t = rng.below(self.tables.len() as u64) as usize;
        let rows = &mut self.tables[t];
        let kind = rows.kind;
        let table = kind.table();
        match rng.below(20) {
            0..=4 => {
                let slot = rows.free_slot(rng);
                rows.add(slot);
                format!(
                    "INSERT INTO app.{table} VALUES {}",
                    kind.values(slot, rng.next())
                )
            }
            5..=11 => {
                let slot = rows.slots[rng.below(rows.slots.len() as u64) as usize];
                kind.update(slot)
            }
            12..=15 => {
                let slot = rows.take(rng);
                format!("DELETE FROM app.{table} WHERE {}", kind.key_condition(slot))
            }
            _ => {
                let from = rows.take(rng);
                let to = rows.free_slot(rng);
                rows.add(to);
                format!(
                    "UPDATE app.{table} SET {} WHERE {}",
                    kind.key_assignment(to),
                    kind.key_condition(from)
                )
            }
        }
    }

    /// Commits transactions until `keep_going` turns false, pausing `pause` after each.
    async fn run(mut self, url: String, keep_going: Arc<AtomicBool>, pause: Duration) -> Self {
        let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
        while keep_going.load(Ordering::SeqCst) {
            let statements = 1 + self.rng.below(3);
            let mut tx = conn.start_transaction(Default::default()).await.unwrap();
            for _ in 0..statements {
                let sql = self.next_statement();
                tx.query_drop(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                assert_eq!(tx.affected_rows(), 1, "{sql} changed one row");
                self.row_changes += 1;
            }
            tx.commit().await.unwrap();
            self.transactions += 1;
            // Pacing of the load, not a wait for a condition.
            tokio::time::sleep(pause).await;
        }
        conn.disconnect().await.unwrap();
        self
    }
}

/// A [`SnapshotWorkload`] committing in the background (a transaction every 10 ms) until
/// [`RunningWorkload::finish`].
struct RunningWorkload {
    keep_going: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<SnapshotWorkload>,
}

impl RunningWorkload {
    /// Starts a workload of `seed` over the `seeded` tables of `relay`'s source.
    fn start(relay: &Relay, seed: u64, seeded: &[(Kind, i64)]) -> Self {
        let keep_going = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn(SnapshotWorkload::new(seed, seeded).run(
            relay.mariadb.root_url(),
            keep_going.clone(),
            Duration::from_millis(10),
        ));
        Self { keep_going, task }
    }

    /// Waits until the snapshot is over (the workload writing until then), stops the workload,
    /// and waits until everything it committed is in MongoDB. Returns the workload and the source
    /// position reached.
    async fn finish(self, relay: &Relay) -> (SnapshotWorkload, String) {
        wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
        self.keep_going.store(false, Ordering::SeqCst);
        let workload = self.task.await.unwrap();
        let position = wait_snapshot_done_and_forwarded(relay, TIMEOUT).await;
        (workload, position)
    }
}

/// The settings of a snapshot that reads `rows_per_second` in chunks of 100, with short
/// intervals everywhere.
fn snapshot_settings(rows_per_second: u64) -> Vec<(String, String)> {
    [
        ("source", "snapshot = \"initial\"".to_string()),
        ("source", "snapshot_chunk_rows = 100".to_string()),
        (
            "source",
            format!("snapshot_rows_per_second = {rows_per_second}"),
        ),
        ("source", "heartbeat_interval = \"500ms\"".to_string()),
        ("wal", "group_commit_delay = \"1ms\"".to_string()),
        ("sink", "connect_timeout = \"1s\"".to_string()),
        ("sink", "retry_max_delay = \"1s\"".to_string()),
        ("sink", "breaker_failures = 1".to_string()),
    ]
    .into_iter()
    .map(|(section, line)| (section.to_string(), line))
    .collect()
}

/// Servers with the `seeded` tables and an sdl configured to snapshot them (not started).
fn snapshot_relay_builder(seeded: &[(Kind, i64)], rows_per_second: u64) -> RelayBuilder {
    let statements: Vec<String> = seeded
        .iter()
        .flat_map(|&(kind, rows)| create_and_seed(kind, rows))
        .collect();
    let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
    let settings = snapshot_settings(rows_per_second);
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(section, line)| (section.as_str(), line.as_str()))
        .collect();
    Relay::builder().sql(&statements).settings(&settings)
}

/// [`snapshot_relay_builder`]'s servers, with sdl started and following the binlog.
async fn snapshot_relay(seeded: &[(Kind, i64)], rows_per_second: u64) -> Relay {
    snapshot_relay_builder(seeded, rows_per_second)
        .following()
        .await
}

/// Asserts what a snapshot of the `seeded` tables under `workload` must give: every change
/// exactly once, one snapshot (`snapshot_id`) with well-formed documents, a log line when each
/// table starts and ends, and each table rebuilt both ways equal to `SELECT *`. Returns the
/// number of snapshot documents.
async fn assert_rebuilds_equal_the_source(
    relay: &Relay,
    seeded: &[(Kind, i64)],
    workload: &SnapshotWorkload,
    snapshot_id: &str,
) -> usize {
    let docs = all_documents(&relay.mongo).await;
    assert_ids_unique(&docs);
    // Every change the workload committed is there exactly once (ids, ordinals, count).
    let changes = changes_in_commit_order(&docs);
    assert_documents_exactly_once(&relay.mariadb, &changes, workload.row_changes, &[]).await;
    let mut conn = relay.conn().await;
    let mut snapshot_rows = 0;
    let logs = relay.sdl.logs();
    for &(kind, _) in seeded {
        let (table, key) = (kind.table(), kind.key());
        assert!(
            logs.matches(&format!("snapshot of app.{table}:")).count() >= 2,
            "a log line when app.{table} starts and one when it ends:\n{logs}"
        );
        let per_snapshot = assert_snapshot_documents_well_formed(&docs, "app", table, key);
        assert_eq!(
            per_snapshot.keys().collect::<Vec<_>>(),
            vec![snapshot_id],
            "app.{table}: one snapshot, the one /status named"
        );
        snapshot_rows += snapshot_documents(&docs, "app", table).len();
        let source = select_keyed(&mut conn, &format!("app.{table}"), key).await;
        assert_rebuilds_equal(&source, &docs, "app", table, key);
    }
    conn.disconnect().await.unwrap();
    snapshot_rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_under_writes_sigkill_and_mongodb_outage_rebuilds_every_table() {
    let test_started = SystemTime::now();
    let seeded = [(Kind::Items, 1200), (Kind::Lines, 1000), (Kind::Tags, 800)];
    // About 12 s of snapshot at 250 rows/s, long enough for a SIGKILL and an outage inside it.
    let mut relay = snapshot_relay(&seeded, 250).await;
    if !relay.can_kill_mongo() {
        return;
    }

    // The workload runs during the whole snapshot, from the moment sdl follows the binlog (with
    // start = "current", every change it commits is relayed).
    let workload = RunningWorkload::start(&relay, 16, &seeded);

    // SIGKILL part way: rows of the first or second table written, some in MongoDB already.
    let before_kill = wait_with_sdl(
        &relay.sdl,
        "a snapshot part way (rows_done > 0, two tables or more left, documents in MongoDB)",
        TIMEOUT,
        || async {
            let status = try_status(&relay.sdl)?;
            let snapshot = status["snapshot"].clone();
            let part_way = snapshot["state"] != "idle"
                && status_number(&snapshot, "rows_done") > 0
                && status_number(&snapshot, "tables_left") >= 2
                && count_documents(&relay.mongo, doc! { "op": "snapshot" }).await > 0;
            part_way.then_some(snapshot)
        },
    )
    .await;
    let snapshot_id = before_kill["id"]
        .as_str()
        .unwrap_or_else(|| panic!("/status snapshot.id while reading: {before_kill}"))
        .to_string();
    relay.sdl.kill();
    eprintln!("SIGKILL during the snapshot: {before_kill}");
    relay.sdl.start();

    // The second run resumes the same snapshot.
    let resumed = wait_snapshot_status(
        &relay.sdl,
        "the snapshot resumed after the SIGKILL (rows written by this run)",
        TIMEOUT,
        |s| s["state"] != "idle" && status_number(s, "rows_written") > 0,
    )
    .await;
    assert_eq!(
        resumed["id"], snapshot_id,
        "the snapshot resumed after a SIGKILL keeps its id: {resumed}"
    );

    // MongoDB outage while the snapshot still runs: the snapshot goes on into the WAL.
    relay.mongo.kill();
    let written_at_outage = status_number(&resumed, "rows_written");
    wait_with_sdl(
        &relay.sdl,
        "the forwarder's breaker to open and the snapshot to go on during the outage",
        TIMEOUT,
        || async {
            let snapshot = try_status(&relay.sdl)?["snapshot"].clone();
            (relay.sdl.logs().contains("circuit breaker open")
                && status_number(&snapshot, "rows_written") >= written_at_outage + 100)
                .then_some(())
        },
    )
    .await;
    relay.mongo.restart().await;
    eprintln!(
        "MongoDB back after an outage during the snapshot: {}",
        try_status(&relay.sdl).map_or(serde_json::Value::Null, |s| s["snapshot"].clone())
    );

    let (workload, position) = workload.finish(&relay).await;

    let requested_at = snapshot_id_millis(&snapshot_id);
    assert!(
        millis_since_epoch(test_started) - 1000 <= requested_at
            && requested_at <= millis_since_epoch(SystemTime::now()),
        "snapshot id {snapshot_id} is the time the snapshot was requested (during this test)"
    );
    let snapshot_rows =
        assert_rebuilds_equal_the_source(&relay, &seeded, &workload, &snapshot_id).await;
    assert_eq!(relay.sdl.metric("sdl_snapshot_tables_remaining"), 0.0);
    assert_offset_reaches(&relay.mongo, &position, Duration::from_secs(15)).await;
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{snapshot_rows} snapshot rows and {} row changes in {} transactions rebuild 3 tables exactly across a SIGKILL and a MongoDB outage",
        workload.row_changes, workload.transactions
    );
}

/// The source connections (the stream's and the snapshot's) dropped mid-snapshot under writes:
/// the ingester reconnects, the snapshot goes on, and every table is still rebuilt exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_through_a_lost_source_connection_rebuilds_every_table() {
    let seeded = [(Kind::Items, 600), (Kind::Lines, 400), (Kind::Tags, 400)];
    let mut relay = snapshot_relay_builder(&seeded, 250)
        .source_via_proxy()
        .setting("source", "connect_timeout = \"1s\"")
        .following()
        .await;
    let workload = RunningWorkload::start(&relay, 61, &seeded);

    let part_way = wait_snapshot_status(&relay.sdl, "200 snapshot rows written", TIMEOUT, |s| {
        s["state"] != "idle" && status_number(s, "rows_written") >= 200
    })
    .await;
    let snapshot_id = part_way["id"].as_str().unwrap().to_string();
    relay.source_proxy().set(Mode::Drop);
    wait_with_sdl(&relay.sdl, "the lost stream noticed", TIMEOUT, || async {
        relay
            .sdl
            .logs()
            .contains("binlog stream lost")
            .then_some(())
    })
    .await;
    relay.source_proxy().set(Mode::Pass);
    wait_with_sdl(&relay.sdl, "the stream followed again", TIMEOUT, || async {
        (relay.sdl.logs().matches("following the binlog").count() >= 2).then_some(())
    })
    .await;

    let (workload, _) = workload.finish(&relay).await;
    let snapshot_rows =
        assert_rebuilds_equal_the_source(&relay, &seeded, &workload, &snapshot_id).await;
    let discarded = relay.sdl.metric("sdl_snapshot_chunks_discarded_total");
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{snapshot_rows} snapshot rows and {} row changes rebuild 3 tables exactly across a lost source connection ({discarded} chunks discarded)",
        workload.row_changes
    );
}

/// The WAL directory lost mid-snapshot (SIGKILL, then the directory moved aside): the new WAL
/// starts from MongoDB's offset, plan included, so the rows and changes that never reached
/// MongoDB are read again, once, and every table is still rebuilt exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_wal_resumes_the_snapshot_from_mongodbs_offset() {
    let seeded = [(Kind::Items, 900), (Kind::Lines, 600)];
    let mut relay = snapshot_relay(&seeded, 300).await;
    let workload = RunningWorkload::start(&relay, 73, &seeded);

    let part_way = wait_with_sdl(
        &relay.sdl,
        "a snapshot part way with 200 rows in MongoDB",
        TIMEOUT,
        || async {
            let snapshot = try_status(&relay.sdl)?["snapshot"].clone();
            let part_way = snapshot["state"] != "idle"
                && status_number(&snapshot, "tables_left") == 2
                && count_documents(&relay.mongo, doc! { "op": "snapshot" }).await >= 200;
            part_way.then_some(snapshot)
        },
    )
    .await;
    let snapshot_id = part_way["id"].as_str().unwrap().to_string();
    relay.sdl.kill();
    let wal = relay.sdl.wal_dir();
    std::fs::rename(&wal, wal.with_extension("lost")).unwrap();
    relay.sdl.start();

    let (workload, _) = workload.finish(&relay).await;
    let snapshot_rows =
        assert_rebuilds_equal_the_source(&relay, &seeded, &workload, &snapshot_id).await;
    let second_log = std::fs::read_to_string(relay.sdl.dir().join("sdl-2.log")).unwrap();
    assert!(
        second_log.contains("continuing from MongoDB's position")
            && !second_log.contains("initial snapshot (source.snapshot"),
        "the new WAL continues MongoDB's offset and its snapshot, without planning another:\n{second_log}"
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!(
        "{snapshot_rows} snapshot rows and {} row changes rebuild 2 tables exactly across a lost WAL directory",
        workload.row_changes
    );
}

/// Every document in MongoDB, checked: no `_id` twice, and the snapshot documents of `kind`'s
/// table well formed and all of one snapshot. Returns the documents, that snapshot's id and how
/// many documents it has.
async fn documents_of_one_snapshot(relay: &Relay, kind: Kind) -> (Vec<Document>, String, usize) {
    let docs = all_documents(&relay.mongo).await;
    assert_ids_unique(&docs);
    let per_snapshot =
        assert_snapshot_documents_well_formed(&docs, "app", kind.table(), kind.key());
    assert_eq!(per_snapshot.len(), 1, "one snapshot: {per_snapshot:?}");
    let (id, images) = per_snapshot.into_iter().next().unwrap();
    (docs, id, images)
}

/// Asserts that `kind`'s table as snapshot `snapshot_id` holds it in `docs` equals its
/// `SELECT *` (`what` names the comparison). Returns the `SELECT *`.
async fn assert_snapshot_equals_the_source(
    relay: &Relay,
    docs: &[Document],
    kind: Kind,
    snapshot_id: &str,
    what: &str,
) -> Table {
    let (table, key) = (kind.table(), kind.key());
    let mut conn = relay.conn().await;
    let source = select_keyed(&mut conn, &format!("app.{table}"), key).await;
    conn.disconnect().await.unwrap();
    assert_tables_equal(
        &source,
        &snapshot_table(docs, "app", table, key, snapshot_id),
        what,
    );
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_resumes_after_sigterm_without_reading_a_row_twice() {
    // A composite key, so that resuming after the last key read compares both of its columns;
    // a multiple of the chunk size, so that the last chunk is full and only a read that finds
    // nothing more ends the table.
    const ROWS: i64 = 2000;
    let mut relay = snapshot_relay(&[(Kind::Lines, ROWS)], 400).await;

    let before_sigterm =
        wait_snapshot_status(&relay.sdl, "300 snapshot rows written", TIMEOUT, |s| {
            s["state"] != "idle" && status_number(s, "rows_done") >= 300
        })
        .await;
    let status = relay.sdl.terminate(Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM mid-snapshot: exit status {status}:\n{}",
        relay.sdl.logs()
    );
    relay.sdl.start();
    // The first /status answer of the restarted service (checked last, below).
    let first_status = wait_with_sdl(
        &relay.sdl,
        "the restarted service's /status",
        TIMEOUT,
        || async { try_status(&relay.sdl) },
    )
    .await;
    let position = wait_snapshot_done_and_forwarded(&relay, TIMEOUT).await;

    // What the first run wrote (at least what /status showed before the SIGTERM) is not read
    // again by the second.
    let second_run_rows = relay.sdl.metric("sdl_snapshot_rows_total") as u64;
    let first_run_rows = status_number(&before_sigterm, "rows_done");
    assert!(
        second_run_rows > 0 && second_run_rows + first_run_rows <= ROWS as u64,
        "the second run resumed: it wrote {second_run_rows} snapshot rows, the first at least {first_run_rows}, of {ROWS}:\n{}",
        relay.sdl.logs()
    );
    let second_log = std::fs::read_to_string(relay.sdl.dir().join("sdl-2.log")).unwrap();
    assert!(
        second_log.contains("snapshot of app.lines:"),
        "the second run logs the table it resumes:\n{second_log}"
    );

    let (docs, snapshot_id, images) = documents_of_one_snapshot(&relay, Kind::Lines).await;
    assert_eq!(images, ROWS as usize, "one snapshot document per row");
    let source = assert_snapshot_equals_the_source(
        &relay,
        &docs,
        Kind::Lines,
        &snapshot_id,
        "app.lines as its snapshot documents hold it",
    )
    .await;
    assert_eq!(source.len(), ROWS as usize);
    assert_offset_reaches(&relay.mongo, &position, Duration::from_secs(15)).await;
    // A service restarted with a snapshot in its WAL shows it from its first answer: not idle
    // with nothing left, which a monitor would take for a finished snapshot.
    let snapshot = &first_status["snapshot"];
    assert!(
        snapshot["state"] != "idle" && status_number(snapshot, "tables_left") == 1,
        "the first /status of the restarted service shows the snapshot its WAL holds: {snapshot}; wal: {}",
        first_status["wal"]
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());

    // `snapshot = "initial"` is taken once per deployment: a later start reads nothing.
    relay.sdl.start();
    relay.sdl.wait_following().await;
    let mut conn = relay.conn().await;
    conn.query_drop(format!(
        "INSERT INTO app.lines VALUES {}",
        Kind::Lines.values(99_999, 1)
    ))
    .await
    .unwrap();
    conn.disconnect().await.unwrap();
    relay.wait_caught_up(TIMEOUT).await;
    wait_snapshot_idle(&relay.sdl, TIMEOUT).await;
    assert_eq!(relay.sdl.metric("sdl_snapshot_rows_total"), 0.0);
    assert_eq!(
        count_documents(&relay.mongo, doc! { "op": "snapshot" }).await,
        ROWS as u64
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}

/// A DDL statement in a chunk's window (here on another table, in a loop) discards the chunk,
/// visibly (the metric, a log line), and the chunk is read again: the snapshot still holds every
/// row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_whose_window_sees_ddl_is_discarded_and_read_again() {
    const ROWS: i64 = 1000;
    let mut relay = snapshot_relay(&[(Kind::Items, ROWS)], 200).await;

    let keep_going = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn({
        let url = relay.mariadb.root_url();
        let keep_going = keep_going.clone();
        async move {
            let mut conn = mysql_async::Conn::from_url(url.as_str()).await.unwrap();
            let mut statements = 0;
            while keep_going.load(Ordering::SeqCst) {
                for ddl in [
                    "CREATE TABLE app.churn (id INT PRIMARY KEY)",
                    "DROP TABLE app.churn",
                ] {
                    conn.query_drop(ddl).await.unwrap();
                    statements += 1;
                }
                // Pacing of the DDL, not a wait for a condition.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            conn.disconnect().await.unwrap();
            statements
        }
    });
    wait_with_sdl(&relay.sdl, "a chunk discarded", TIMEOUT, || async {
        (relay.sdl.metric("sdl_snapshot_chunks_discarded_total") >= 1.0).then_some(())
    })
    .await;
    keep_going.store(false, Ordering::SeqCst);
    let ddl_statements = churn.await.unwrap();
    wait_snapshot_done_and_forwarded(&relay, TIMEOUT).await;

    let discarded = relay.sdl.metric("sdl_snapshot_chunks_discarded_total");
    let logs = relay.sdl.logs();
    assert!(
        logs.contains("snapshot of app.items: chunk discarded"),
        "a discarded chunk is logged:\n{logs}"
    );
    let (docs, snapshot_id, _) = documents_of_one_snapshot(&relay, Kind::Items).await;
    assert_snapshot_equals_the_source(
        &relay,
        &docs,
        Kind::Items,
        &snapshot_id,
        "app.items as its snapshot documents hold it after discarded chunks",
    )
    .await;
    let ddl_documents = docs.iter().filter(|d| d.get_str("op") == Ok("ddl")).count();
    assert_eq!(
        ddl_documents, ddl_statements,
        "every DDL statement relayed once"
    );
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
    eprintln!("{discarded} chunks discarded by {ddl_statements} DDL statements; every row snapshotted once");
}

/// Documents of `app.t (id, v)` for the checks of the rebuilds below: a change at GTID sequence
/// `seq` (row `row`), or a snapshot image at position `0-1-<seq>`.
fn document(
    op: &str,
    seq: u64,
    row: i64,
    before: Option<(i64, &str)>,
    after: Option<(i64, &str)>,
) -> Document {
    let image = |(id, v): (i64, &str)| doc! { "id": id, "v": v };
    let mut d = doc! { "_id": format!("default/{op}/{seq}:{row}"), "op": op };
    let mut meta = doc! { "source": "default", "src": "default", "db": "app", "tbl": "t" };
    if op == "snapshot" {
        meta.insert("position", format!("0-1-{seq}"));
        meta.insert("snapshot", "20261127T190102.123Z");
    } else {
        meta.insert("gtid", format!("0-1-{seq}"));
        meta.insert("row", row);
    }
    d.insert("meta", meta);
    if let Some(before) = before {
        d.insert("before", image(before));
    }
    if let Some(after) = after {
        d.insert("after", image(after));
    }
    d
}

/// The panic message of the strict rebuild of `docs`, or None when it accepts them.
fn interleaved_rebuild_refusal(docs: &[Document]) -> Option<String> {
    let outcome = std::panic::catch_unwind(|| rebuild_interleaved(docs, "app", "t", &["id"]));
    outcome.err().map(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| format!("{:?}", panic.downcast_ref::<&str>()))
    })
}

/// The rebuilds the consistency tests rely on can fail: they accept documents that agree (an
/// image before a change, an insert past the snapshot's progress before it), both giving the
/// same table, and the strict one refuses an image that overlaps a change before it, a row the
/// snapshot missed, and an image of a row the stream had deleted.
#[test]
fn the_rebuilds_accept_agreeing_documents_and_refuse_overlap_and_gap() {
    let agreeing = vec![
        document("insert", 2, 0, None, Some((5, "e"))),
        document("snapshot", 3, 0, None, Some((1, "a"))),
        document("snapshot", 3, 0, None, Some((2, "b"))),
        document("snapshot", 3, 0, None, Some((5, "e"))),
        document("update", 4, 0, Some((2, "b")), Some((2, "c"))),
        document("update", 4, 1, Some((1, "a")), Some((9, "a"))),
        document("delete", 5, 0, Some((5, "e")), None),
    ];
    let interleaved = rebuild_interleaved(&agreeing, "app", "t", &["id"]);
    assert_eq!(
        interleaved,
        rebuild_snapshot_first(&agreeing, "app", "t", &["id"])
    );
    let rows: Vec<String> = interleaved
        .values()
        .map(|r| format!("{}={}", r["id"], r["v"]))
        .collect();
    assert_eq!(rows, ["2=c", "9=a"]);

    let overlap = vec![
        document("insert", 2, 0, None, Some((1, "a"))),
        document("update", 3, 0, Some((1, "a")), Some((1, "b"))),
        // Read before the update, placed after it.
        document("snapshot", 3, 0, None, Some((1, "a"))),
    ];
    let refusal = interleaved_rebuild_refusal(&overlap).expect("an overlapping image is refused");
    assert!(
        refusal.contains("differs from the row's state"),
        "{refusal}"
    );

    let gap = vec![
        document("snapshot", 3, 0, None, Some((1, "a"))),
        document("snapshot", 3, 0, None, Some((3, "c"))),
        // Row 2 existed (it is updated) but is in no snapshot document below the progress.
        document("update", 4, 0, Some((2, "b")), Some((2, "x"))),
    ];
    let refusal = interleaved_rebuild_refusal(&gap).expect("a missed row is refused");
    assert!(refusal.contains("the snapshot missed it"), "{refusal}");

    let deleted = vec![
        document("snapshot", 3, 0, None, Some((1, "a"))),
        document("delete", 4, 0, Some((1, "a")), None),
        document("snapshot", 5, 0, None, Some((1, "a"))),
    ];
    let refusal =
        interleaved_rebuild_refusal(&deleted).expect("an image of a deleted row is refused");
    assert!(
        refusal.contains("differs from the row's state"),
        "{refusal}"
    );
}

/// A column dropped while the table's snapshot runs (the soak's `ALTER TABLE ... DROP COLUMN`):
/// the next chunk's query names a column that is gone; the table is described again and read
/// on, not refused, and every row still has one snapshot image: those read before the drop with
/// the column, those read after without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_dropped_mid_snapshot_is_described_again_and_read_on() {
    const ROWS: i64 = 1000;
    // 200 rows/s: the snapshot lasts about 5 s, the drop lands in the middle.
    let mut relay = snapshot_relay(&[(Kind::Items, ROWS)], 200).await;
    wait_with_sdl(
        &relay.sdl,
        "part of app.items snapshotted",
        TIMEOUT,
        || async {
            let status = try_status(&relay.sdl)?;
            let done = status["snapshot"]["rows_done"].as_u64()?;
            (done >= 200).then_some(())
        },
    )
    .await;
    let mut conn = relay.conn().await;
    conn.query_drop("ALTER TABLE app.items DROP COLUMN note")
        .await
        .unwrap();
    wait_snapshot_done_and_forwarded(&relay, TIMEOUT).await;
    assert!(
        relay.sdl.is_running(),
        "sdl goes on after the drop:\n{}",
        relay.sdl.logs()
    );
    let status = try_status(&relay.sdl).expect("/status answers");
    assert_eq!(
        status["snapshot"]["refused"].as_array().map(Vec::len),
        Some(0),
        "nothing refused: {status}"
    );

    let (docs, _, _) = documents_of_one_snapshot(&relay, Kind::Items).await;
    let images: Vec<&Document> = docs
        .iter()
        .filter(|d| d.get_str("op") == Ok("snapshot"))
        .collect();
    let ids: HashSet<i64> = images
        .iter()
        .map(|d| {
            let pk = d.get_document("meta").unwrap().get_document("pk").unwrap();
            pk.get_i64("id").unwrap()
        })
        .collect();
    assert_eq!(images.len(), ROWS as usize, "one image per row");
    let seeded: HashSet<i64> = Kind::Items.seed_slots(ROWS).into_iter().collect();
    assert_eq!(ids, seeded, "every row once");
    let with_note = images
        .iter()
        .filter(|d| d.get_document("after").unwrap().contains_key("note"))
        .count();
    assert!(
        with_note > 0 && with_note < ROWS as usize,
        "rows read before the drop hold `note`, rows read after do not: {with_note} of {ROWS}"
    );
    conn.disconnect().await.unwrap();
    assert!(relay.sdl.terminate(Duration::from_secs(30)).success());
}
