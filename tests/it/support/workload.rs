//! A reproducible mixed workload over three tables, counting the row changes it commits.

use std::sync::atomic::{AtomicBool, Ordering};

use mysql_async::prelude::Queryable;

use super::Rng;

/// The tables and the primary-key column each is keyed by.
pub const TABLES: [(&str, &str); 3] = [("accounts", "id"), ("orders", "id"), ("events", "id")];

pub async fn create_tables(conn: &mut mysql_async::Conn) {
    for ddl in [
        "CREATE TABLE app.accounts (id INT PRIMARY KEY, owner VARCHAR(64) NOT NULL, \
         balance DECIMAL(12,2) NOT NULL, updates INT NOT NULL DEFAULT 0) ENGINE=InnoDB",
        "CREATE TABLE app.orders (id BIGINT PRIMARY KEY, account_id INT NOT NULL, \
         amount DECIMAL(10,2), note TEXT, status VARCHAR(16) NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE app.events (id INT AUTO_INCREMENT PRIMARY KEY, kind VARCHAR(32) NOT NULL, \
         payload VARCHAR(255) CHARACTER SET latin1) ENGINE=InnoDB",
    ] {
        conn.query_drop(ddl).await.unwrap();
    }
}

pub trait Affected: Queryable {
    fn affected(&self) -> u64;
}

impl Affected for mysql_async::Conn {
    fn affected(&self) -> u64 {
        self.affected_rows()
    }
}

impl Affected for mysql_async::Transaction<'_> {
    fn affected(&self) -> u64 {
        self.affected_rows()
    }
}

/// Live primary keys per table, so updates and deletes hit existing rows.
#[derive(Default)]
pub struct Workload {
    rng_seed: u64,
    accounts: Vec<i64>,
    orders: Vec<i64>,
    events: Vec<i64>,
    next_account: i64,
    next_order: i64,
    /// Row changes committed so far (rows inserted, changed or deleted).
    pub row_changes: u64,
    /// Committed transactions that changed at least one row.
    pub transactions: u64,
}

impl Workload {
    pub fn new(seed: u64) -> Self {
        Self {
            rng_seed: seed,
            next_account: 1,
            next_order: 1,
            ..Default::default()
        }
    }

    /// Runs transactions until at least `target` row changes are committed.
    pub async fn run(&mut self, conn: &mut mysql_async::Conn, target: u64) {
        self.run_while(conn, target, &AtomicBool::new(false)).await
    }

    /// Runs transactions until at least `target` row changes are committed and `keep_going` is
    /// false, so a test can hold the workload open while it injects faults.
    pub async fn run_while(
        &mut self,
        conn: &mut mysql_async::Conn,
        target: u64,
        keep_going: &AtomicBool,
    ) {
        let mut rng = Rng::new(self.rng_seed);
        while self.row_changes < target || keep_going.load(Ordering::SeqCst) {
            let kind = rng.below(10);
            let changed = match kind {
                0..=2 => self.single_insert(conn, &mut rng).await,
                3..=4 => self.multi_row_insert(conn, &mut rng).await,
                5..=7 => self.mixed_transaction(conn, &mut rng).await,
                8 => self.range_update(conn, &mut rng).await,
                _ => self.delete_some(conn, &mut rng).await,
            };
            self.row_changes += changed;
            // A statement that changed nothing writes no transaction to the binlog.
            if changed > 0 {
                self.transactions += 1;
            }
        }
        self.rng_seed = rng.next();
    }

    async fn exec(conn: &mut impl Affected, sql: String) -> u64 {
        conn.query_drop(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.affected()
    }

    async fn single_insert(&mut self, conn: &mut mysql_async::Conn, rng: &mut Rng) -> u64 {
        match rng.below(3) {
            0 => {
                let id = self.next_account;
                self.next_account += 1;
                self.accounts.push(id);
                Self::exec(conn, format!(
                    "INSERT INTO app.accounts (id, owner, balance) VALUES ({id}, 'owner-{id}-é', {}.{:02})",
                    rng.below(100000), rng.below(100)
                )).await
            }
            1 => {
                let id = self.next_order;
                self.next_order += 1;
                self.orders.push(id);
                Self::exec(
                    conn,
                    format!(
                        "INSERT INTO app.orders VALUES ({id}, {}, {}.{:02}, 'note ✓ {id}', 'new')",
                        rng.below(1000),
                        rng.below(10000),
                        rng.below(100)
                    ),
                )
                .await
            }
            _ => {
                let n = Self::exec(
                    conn,
                    format!(
                        "INSERT INTO app.events (kind, payload) VALUES ('k{}', 'café {}')",
                        rng.below(5),
                        rng.below(1_000_000)
                    ),
                )
                .await;
                self.events.push(conn.last_insert_id().unwrap() as i64);
                n
            }
        }
    }

    async fn multi_row_insert(&mut self, conn: &mut mysql_async::Conn, rng: &mut Rng) -> u64 {
        let rows = 2 + rng.below(40);
        let mut values = Vec::new();
        for _ in 0..rows {
            let id = self.next_order;
            self.next_order += 1;
            self.orders.push(id);
            values.push(format!(
                "({id}, {}, {}.{:02}, NULL, 'bulk')",
                rng.below(1000),
                rng.below(10000),
                rng.below(100)
            ));
        }
        Self::exec(
            conn,
            format!("INSERT INTO app.orders VALUES {}", values.join(",")),
        )
        .await
    }

    async fn mixed_transaction(&mut self, conn: &mut mysql_async::Conn, rng: &mut Rng) -> u64 {
        let mut tx = conn.start_transaction(Default::default()).await.unwrap();
        let mut changed = 0;
        let statements = 2 + rng.below(6);
        for _ in 0..statements {
            match rng.below(4) {
                0 => {
                    let id = self.next_account;
                    self.next_account += 1;
                    self.accounts.push(id);
                    changed += Self::exec(
                        &mut tx,
                        format!(
                        "INSERT INTO app.accounts (id, owner, balance) VALUES ({id}, 'o{id}', 0.00)"
                    ),
                    )
                    .await;
                }
                1 if !self.accounts.is_empty() => {
                    let id = self.accounts[rng.below(self.accounts.len() as u64) as usize];
                    changed += Self::exec(&mut tx, format!(
                        "UPDATE app.accounts SET balance = balance + 1.25, updates = updates + 1 WHERE id = {id}"
                    )).await;
                }
                2 if !self.orders.is_empty() => {
                    let id = self.orders[rng.below(self.orders.len() as u64) as usize];
                    changed += Self::exec(&mut tx, format!(
                        "UPDATE app.orders SET status = 'paid-{}', note = CONCAT(COALESCE(note, ''), '+') WHERE id = {id}",
                        rng.below(100)
                    )).await;
                }
                _ => {
                    changed += Self::exec(
                        &mut tx,
                        format!(
                            "INSERT INTO app.events (kind, payload) VALUES ('tx', 'x{}')",
                            rng.below(1000)
                        ),
                    )
                    .await;
                    self.events.push(tx.last_insert_id().unwrap() as i64);
                }
            }
        }
        tx.commit().await.unwrap();
        changed
    }

    async fn range_update(&mut self, conn: &mut mysql_async::Conn, rng: &mut Rng) -> u64 {
        let from = 1 + rng.below(self.next_account.max(2) as u64) as i64;
        let to = from + rng.below(30) as i64;
        Self::exec(
            conn,
            format!(
                "UPDATE app.accounts SET updates = updates + 1 WHERE id BETWEEN {from} AND {to}"
            ),
        )
        .await
    }

    async fn delete_some(&mut self, conn: &mut mysql_async::Conn, rng: &mut Rng) -> u64 {
        if self.orders.len() < 10 {
            return 0;
        }
        let mut ids = Vec::new();
        for _ in 0..(1 + rng.below(5)) {
            let i = rng.below(self.orders.len() as u64) as usize;
            ids.push(self.orders.swap_remove(i));
        }
        let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        Self::exec(
            conn,
            format!("DELETE FROM app.orders WHERE id IN ({})", list.join(",")),
        )
        .await
    }
}
