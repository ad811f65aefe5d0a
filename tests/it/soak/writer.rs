//! The soak's writer: a mixed stream of transactions into MariaDB that keeps going through faults.
//!
//! Single-row and multi-row inserts, multi-statement transactions over several tables, updates
//! (also of the primary key), deletes, ALTER TABLE on a schedule, and very large transactions
//! (200,000 rows in one) at chosen moments. Ids are never reused, so no statement fails on a
//! duplicate key; updates and deletes aim at recent ids, and one that finds no row changes
//! nothing. When MariaDB goes away the writer reconnects and goes on; a transaction whose COMMIT
//! was cut off has an unknown outcome, which is fine: the final check is against what the source
//! holds and what its binlog says, not against what the writer believes.
//!
//! The fault injector steers it through a [`Control`]: it pauses the writer between two
//! transactions (none open, every COMMIT answered) and points it at another server (the primary
//! after a failover); a resumed writer connects afresh to the server it is pointed at.
//!
//! For the soak from a snapshot, [`prefill`] fills every table the writer's way before sdl first
//! starts; the writer then goes on from the ids after those rows, and one update or delete in
//! four aims at any id of its table instead of a recent one, so that rows change all over the
//! table while sdl's snapshot reads it chunk by chunk.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Error};
use tokio::sync::watch;

use crate::soak::schema::{self, Alter, Column, Effect};
use crate::support::{wait_until, Rng};

pub const BIG_ROWS: u64 = 200_000;
/// The very large update changes every one of those rows (two images per change).
pub const BIG_UPDATE_ROWS: u64 = BIG_ROWS;

/// The fault injector's handle on the writer: pause it, point it at another server, resume it.
#[derive(Clone)]
pub struct Control {
    inner: Arc<ControlInner>,
}

struct ControlInner {
    /// The server to write to (root URL); read at every (re)connect.
    url: std::sync::Mutex<String>,
    /// Set by the fault injector: pause before the next transaction.
    pause: watch::Sender<bool>,
    /// Set by the writer: it is paused (no transaction open).
    paused: watch::Sender<bool>,
}

impl Control {
    pub fn new(url: String) -> Self {
        Self {
            inner: Arc::new(ControlInner {
                url: std::sync::Mutex::new(url),
                pause: watch::channel(false).0,
                paused: watch::channel(false).0,
            }),
        }
    }

    fn url(&self) -> String {
        self.inner.url.lock().unwrap().clone()
    }

    /// Asks the writer to pause and waits until it has, between two transactions (it may be in
    /// the middle of a 200,000-row one, or reconnecting after a fault).
    pub async fn pause(&self, timeout: Duration) {
        self.inner.pause.send_replace(true);
        let mut paused = self.inner.paused.subscribe();
        tokio::time::timeout(timeout, paused.wait_for(|p| *p))
            .await
            .unwrap_or_else(|_| panic!("the writer did not pause within {timeout:?}"))
            .expect("the writer's control");
    }

    /// Points the writer at `url` (taken at its next connect: a paused writer reconnects when it
    /// resumes).
    pub fn point_at(&self, url: String) {
        *self.inner.url.lock().unwrap() = url;
    }

    pub fn resume(&self) {
        self.inner.pause.send_replace(false);
    }

    /// In the writer: when a pause is asked for, says so and waits for the resume.
    async fn pause_point(&self) -> bool {
        let mut pause = self.inner.pause.subscribe();
        if !*pause.borrow_and_update() {
            return false;
        }
        self.inner.paused.send_replace(true);
        let _ = pause.wait_for(|p| !*p).await;
        self.inner.paused.send_replace(false);
        true
    }
}

pub struct Plan {
    pub seed: u64,
    /// The first fresh id of each table: what [`prefill`] returned, or empty (every table starts
    /// empty, ids from 1).
    pub first_ids: BTreeMap<&'static str, i64>,
    /// When the very large transactions run, from the writer's start.
    pub big_at: Vec<Duration>,
    pub alter_every: Duration,
    /// Upper bound of the random pause after each transaction (pacing, not waiting).
    pub pause_max: Duration,
}

#[derive(Debug, Default)]
pub struct Report {
    /// Transactions whose COMMIT (or autocommit statement) was acknowledged.
    pub committed: u64,
    /// Row changes of those (affected rows).
    pub committed_rows: u64,
    /// Transactions whose COMMIT was cut off by a fault: committed or not, the binlog says.
    pub unknown_outcome: u64,
    /// Transactions rolled back because the connection broke before their COMMIT.
    pub rolled_back: u64,
    pub reconnects: u64,
    pub alters: u64,
    /// The very large transactions: (what, rows, committed or unknown).
    pub big: Vec<(&'static str, u64, &'static str)>,
}

/// The writer's view of the schema: the columns each table has now, and the next fresh id.
struct State {
    columns: BTreeMap<&'static str, Vec<Column>>,
    next_id: BTreeMap<&'static str, i64>,
    alters: Vec<Alter>,
    next_alter: usize,
    /// The first id of the rows the last very large insert wrote.
    big_base: Option<i64>,
    big_step: usize,
    /// The tables held rows before the writer started (the soak from a snapshot): some updates
    /// and deletes aim at any id, not only recent ones.
    prefilled: bool,
}

impl State {
    /// Every table empty, or (`first_ids` not empty) already holding the ids below these.
    fn new(first_ids: &BTreeMap<&'static str, i64>) -> Self {
        let mut columns = BTreeMap::new();
        let mut next_id = BTreeMap::new();
        for table in schema::tables() {
            next_id.insert(table.name, first_ids.get(table.name).copied().unwrap_or(1));
            columns.insert(table.name, table.columns);
        }
        Self {
            columns,
            next_id,
            alters: schema::alters(),
            next_alter: 0,
            big_base: None,
            big_step: 0,
            prefilled: !first_ids.is_empty(),
        }
    }

    fn tables(&self) -> Vec<&'static str> {
        self.columns.keys().copied().collect()
    }

    fn fresh_id(&mut self, table: &'static str) -> i64 {
        let id = self.next_id.get_mut(table).unwrap();
        *id += 1;
        *id - 1
    }

    /// An id that probably exists (recent ones are more likely not yet deleted).
    fn recent_id(&self, table: &str, rng: &mut Rng) -> i64 {
        let next = self.next_id[table];
        if self.prefilled && rng.below(4) == 0 {
            return 1 + rng.below(next.max(2) as u64 - 1) as i64;
        }
        let window = next.min(400) as u64;
        next - 1 - rng.below(window.max(1)) as i64
    }

    fn apply(&mut self, alter: &Alter) {
        let columns = self.columns.get_mut(alter.table).unwrap();
        match &alter.effect {
            Effect::Add { column, .. } => columns.push(column.clone()),
            Effect::Drop { column } => columns.retain(|c| c.name != *column),
            Effect::Retype { .. } => {}
        }
    }
}

fn random_table(state: &State, rng: &mut Rng) -> &'static str {
    let tables = state.tables();
    tables[rng.below(tables.len() as u64) as usize]
}

fn insert_sql(state: &mut State, table: &'static str, rows: usize, rng: &mut Rng) -> String {
    let columns: Vec<Column> = state.columns[table].clone();
    let names: Vec<&str> = columns.iter().map(|c| c.name).collect();
    let values: Vec<String> = (0..rows)
        .map(|_| {
            let id = state.fresh_id(table);
            let mut v = vec![id.to_string()];
            v.extend(columns.iter().map(|c| schema::literal(c.kind, rng)));
            format!("({})", v.join(", "))
        })
        .collect();
    format!(
        "INSERT INTO app.{table} (id, {}) VALUES {}",
        names.join(", "),
        values.join(", ")
    )
}

fn set_clause(state: &State, table: &str, rng: &mut Rng) -> String {
    let columns = &state.columns[table];
    let n = 1 + rng.below(3) as usize;
    (0..n)
        .map(|_| {
            let c = &columns[rng.below(columns.len() as u64) as usize];
            format!("{} = {}", c.name, schema::literal(c.kind, rng))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One statement of the mixed kinds (not DDL, not the very large ones).
fn statement(state: &mut State, rng: &mut Rng) -> String {
    let table = random_table(state, rng);
    match rng.below(100) {
        0..=39 => insert_sql(state, table, 1, rng),
        40..=54 => {
            let rows = if rng.below(10) == 0 {
                100 + rng.below(400)
            } else {
                2 + rng.below(40)
            };
            insert_sql(state, table, rows as usize, rng)
        }
        55..=69 => {
            let id = state.recent_id(table, rng);
            format!(
                "UPDATE app.{table} SET {} WHERE id = {id}",
                set_clause(state, table, rng)
            )
        }
        70..=77 => {
            let from = state.recent_id(table, rng);
            format!(
                "UPDATE app.{table} SET {} WHERE id BETWEEN {from} AND {}",
                set_clause(state, table, rng),
                from + rng.below(60) as i64
            )
        }
        // The primary key changes: before and after images carry different ids.
        78..=86 => {
            let old = state.recent_id(table, rng);
            let new = state.fresh_id(table);
            format!("UPDATE app.{table} SET id = {new} WHERE id = {old}")
        }
        87..=94 => {
            let ids: Vec<String> = (0..1 + rng.below(5))
                .map(|_| state.recent_id(table, rng).to_string())
                .collect();
            format!("DELETE FROM app.{table} WHERE id IN ({})", ids.join(", "))
        }
        _ => {
            let from = state.recent_id(table, rng);
            format!(
                "DELETE FROM app.{table} WHERE id BETWEEN {from} AND {}",
                from + rng.below(20) as i64
            )
        }
    }
}

/// The very large transactions, in turn: insert 200,000 rows, update them, delete them all.
fn big_transaction(state: &mut State) -> (&'static str, Vec<String>) {
    let step = state.big_step % 3;
    state.big_step += 1;
    match (step, state.big_base) {
        (1, Some(base)) => (
            "update",
            vec![format!(
                "UPDATE app.bulk SET amount = amount + 1, v = CONCAT(v, '+') WHERE id BETWEEN {base} AND {}",
                base + BIG_UPDATE_ROWS as i64 - 1
            )],
        ),
        (2, Some(base)) => (
            "delete",
            vec![format!(
                "DELETE FROM app.bulk WHERE id BETWEEN {base} AND {}",
                base + BIG_ROWS as i64 - 1
            )],
        ),
        _ => {
            state.big_step = 1;
            let base = state.next_id["bulk"];
            *state.next_id.get_mut("bulk").unwrap() += BIG_ROWS as i64;
            state.big_base = Some(base);
            let misc = state.fresh_id("misc");
            (
                "insert",
                vec![
                    format!(
                        "INSERT INTO app.bulk (id, grp, v, amount, at) SELECT {base} - 1 + seq, seq MOD 1000, CONCAT('bulk-', seq), seq / 100, TIMESTAMP'2024-01-01 00:00:00' + INTERVAL seq SECOND FROM app.seq_1_to_{BIG_ROWS}"
                    ),
                    format!("INSERT INTO app.misc (id, e) VALUES ({misc}, 'b')"),
                ],
            )
        }
    }
}

/// Errors that mean the connection (or the server) went away: a fault, not a test bug.
fn connection_lost(e: &Error) -> bool {
    match e {
        Error::Io(_) | Error::Driver(_) => true,
        // Shutdown in progress, connection killed, server gone, lost connection, interrupted.
        Error::Server(s) => matches!(s.code, 1053 | 1927 | 2006 | 2013 | 1317 | 4031),
        _ => false,
    }
}

enum Outcome {
    Committed(u64),
    Unknown,
    RolledBack,
}

/// A failed statement: a lost connection is a fault; anything else is a bug in the workload.
fn expect_lost(e: Error, sql: &str) {
    if !connection_lost(&e) {
        let sql: String = sql.chars().take(400).collect();
        panic!("the workload's statement failed: {e}: {sql}");
    }
}

/// Runs `statements` as one transaction (a single statement in autocommit).
async fn transaction(conn: &mut Conn, statements: &[String]) -> Outcome {
    if let [single] = statements {
        return match conn.query_drop(single).await {
            Ok(()) => Outcome::Committed(conn.affected_rows()),
            Err(e) => {
                expect_lost(e, single);
                Outcome::Unknown
            }
        };
    }
    if let Err(e) = conn.query_drop("BEGIN").await {
        expect_lost(e, "BEGIN");
        return Outcome::RolledBack;
    }
    let mut rows = 0;
    for sql in statements {
        match conn.query_drop(sql).await {
            Ok(()) => rows += conn.affected_rows(),
            Err(e) => {
                expect_lost(e, sql);
                return Outcome::RolledBack;
            }
        }
    }
    match conn.query_drop("COMMIT").await {
        Ok(()) => Outcome::Committed(rows),
        Err(e) => {
            expect_lost(e, "COMMIT");
            Outcome::Unknown
        }
    }
}

async fn connect(url: &str) -> Conn {
    let mut conn = wait_until(
        "MariaDB to accept the writer",
        Duration::from_secs(300),
        || async {
            tokio::time::timeout(Duration::from_secs(5), Conn::from_url(url))
                .await
                .ok()?
                .ok()
        },
    )
    .await;
    conn.query_drop("SET time_zone = '+00:00', sql_mode = ''")
        .await
        .expect("session settings");
    conn
}

/// Whether `alter` is in force in the server (after a fault cut its outcome off).
async fn alter_in_force(conn: &mut Conn, alter: &Alter) -> Result<bool, Error> {
    let (column, want_type) = match &alter.effect {
        Effect::Add { column, .. } => (column.name, None),
        Effect::Drop { column } => (*column, None),
        Effect::Retype {
            column,
            column_type,
        } => (*column, Some(*column_type)),
    };
    let found: Option<String> = conn
        .exec_first(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = 'app' AND TABLE_NAME = ? AND COLUMN_NAME = ?",
            (alter.table, column),
        )
        .await?;
    Ok(match &alter.effect {
        Effect::Add { .. } => found.is_some(),
        Effect::Drop { .. } => found.is_none(),
        Effect::Retype { .. } => found.as_deref() == want_type,
    })
}

/// Rows per INSERT of [`prefill`].
const PREFILL_ROWS_PER_INSERT: u64 = 500;

/// Fills every table with `rows` rows (ids `1..=rows`, random values of every column as the
/// writer makes them), INSERTs of `PREFILL_ROWS_PER_INSERT` rows, before sdl first starts.
/// Returns the first fresh id of each table, for [`Plan::first_ids`].
pub async fn prefill(url: &str, rows: u64, seed: u64) -> BTreeMap<&'static str, i64> {
    let mut rng = Rng::new(seed);
    let mut state = State::new(&BTreeMap::new());
    let mut conn = connect(url).await;
    for table in state.tables() {
        let mut left = rows;
        while left > 0 {
            let n = left.min(PREFILL_ROWS_PER_INSERT);
            let sql = insert_sql(&mut state, table, n as usize, &mut rng);
            conn.query_drop(&sql)
                .await
                .unwrap_or_else(|e| panic!("prefilling app.{table}: {e}"));
            left -= n;
        }
    }
    conn.disconnect().await.unwrap();
    state.next_id
}

/// Writes until `stop` turns true, to the server `control` points at.
pub async fn run(plan: Plan, control: Control, stop: Arc<AtomicBool>) -> Report {
    let mut rng = Rng::new(plan.seed);
    let mut state = State::new(&plan.first_ids);
    let mut report = Report::default();
    let mut conn = connect(&control.url()).await;
    let started = Instant::now();
    let mut big_at = plan.big_at.clone().into_iter().peekable();
    let mut next_alter_at = plan.alter_every;
    // An ALTER whose outcome a fault cut off: settled from information_schema after reconnecting.
    let mut unsettled_alter: Option<Alter> = None;
    while !stop.load(Ordering::SeqCst) {
        if control.pause_point().await {
            // The server may have been killed and another promoted meanwhile.
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.disconnect()).await;
            conn = connect(&control.url()).await;
        }
        if let Some(alter) = unsettled_alter.take() {
            match alter_in_force(&mut conn, &alter).await {
                Ok(true) => {
                    state.apply(&alter);
                    state.next_alter += 1;
                    report.alters += 1;
                }
                Ok(false) => {}
                Err(e) if connection_lost(&e) => {
                    unsettled_alter = Some(alter);
                    report.reconnects += 1;
                    conn = connect(&control.url()).await;
                    continue;
                }
                Err(e) => panic!("reading information_schema: {e}"),
            }
        }
        let elapsed = started.elapsed();
        let (statements, big, alter) = if big_at.peek().is_some_and(|at| elapsed >= *at) {
            big_at.next();
            let (what, statements) = big_transaction(&mut state);
            (statements, Some(what), None)
        } else if elapsed >= next_alter_at {
            next_alter_at = elapsed + plan.alter_every;
            let alter = state.alters[state.next_alter % state.alters.len()].clone();
            (vec![alter.statement.to_string()], None, Some(alter))
        } else if rng.below(4) == 0 {
            let n = 2 + rng.below(7);
            (
                (0..n).map(|_| statement(&mut state, &mut rng)).collect(),
                None,
                None,
            )
        } else {
            (vec![statement(&mut state, &mut rng)], None, None)
        };
        let outcome = transaction(&mut conn, &statements).await;
        let lost = !matches!(outcome, Outcome::Committed(_));
        match outcome {
            Outcome::Committed(rows) => {
                report.committed += 1;
                // An ALTER that copies the table reports the rows it copied: no row changes.
                if alter.is_none() {
                    report.committed_rows += rows;
                }
                if let Some(alter) = &alter {
                    state.apply(alter);
                    state.next_alter += 1;
                    report.alters += 1;
                }
                if let Some(what) = big {
                    report.big.push((what, rows, "committed"));
                }
            }
            Outcome::Unknown => {
                report.unknown_outcome += 1;
                if let Some(alter) = alter {
                    unsettled_alter = Some(alter);
                }
                if let Some(what) = big {
                    report.big.push((what, BIG_ROWS, "outcome unknown"));
                }
            }
            Outcome::RolledBack => {
                report.rolled_back += 1;
                if let Some(what) = big {
                    report.big.push((what, 0, "rolled back"));
                }
            }
        }
        if lost {
            report.reconnects += 1;
            conn = connect(&control.url()).await;
            continue;
        }
        let pause = plan.pause_max.as_millis() as u64;
        if pause > 0 {
            // Pacing of the load, not a wait for a condition.
            tokio::time::sleep(Duration::from_millis(rng.below(pause))).await;
        }
    }
    let _ = conn.disconnect().await;
    report
}
