//! The benchmark table `bench_rows` and its writers, shared by the benchmarks that relay rows
//! from MariaDB (`e2e`, `sources`): every one of them writes the same rows the same way, so their
//! figures compare.

use mysql_async::prelude::Queryable;

/// Rows per source transaction of [`write_rows`].
pub const ROWS_PER_TRANSACTION: u64 = 1000;
/// Rows per multi-row INSERT of [`write_rows`].
pub const ROWS_PER_INSERT: u64 = 250;
/// The columns of a benchmark table (`CREATE TABLE app.x {TABLE_DDL}`).
pub const TABLE_DDL: &str = "(id INT PRIMARY KEY, customer VARCHAR(64) NOT NULL, \
     email VARCHAR(128) NOT NULL, status VARCHAR(16) NOT NULL, quantity INT NOT NULL, \
     price DECIMAL(12,2) NOT NULL, created_at DATETIME NOT NULL, updated_at DATETIME(6) NULL) \
     ENGINE=InnoDB";

/// Writes rows `first..first + count` of the benchmark table as transactions of
/// `ROWS_PER_TRANSACTION` rows (multi-row INSERTs of `ROWS_PER_INSERT`). Returns the transactions.
pub async fn write_rows(conn: &mut mysql_async::Conn, table: &str, first: u64, count: u64) -> u64 {
    let mut transactions = 0;
    let mut id = first;
    let end = first + count;
    while id < end {
        let mut tx = conn
            .start_transaction(mysql_async::TxOpts::default())
            .await
            .unwrap();
        let tx_end = (id + ROWS_PER_TRANSACTION).min(end);
        while id < tx_end {
            let n = ROWS_PER_INSERT.min(tx_end - id);
            tx.query_drop(insert_statement(table, id, n)).await.unwrap();
            id += n;
        }
        tx.commit().await.unwrap();
        transactions += 1;
    }
    transactions
}

/// One multi-row INSERT of rows `first..first + n`.
pub fn insert_statement(table: &str, first: u64, n: u64) -> String {
    let mut sql = format!(
        "INSERT INTO {table} (id, customer, email, status, quantity, price, created_at, updated_at) VALUES "
    );
    for id in first..first + n {
        if id > first {
            sql.push(',');
        }
        let status = ["new", "paid", "shipped", "cancelled"][(id % 4) as usize];
        sql.push_str(&format!(
            "({id},'customer {id}','user{id}@example.com','{status}',{},{}.{:02},\
             '2024-01-01 00:00:00' + INTERVAL {id} SECOND,{})",
            id % 97,
            id % 10_000,
            id % 100,
            if id % 3 == 0 {
                "NOW(6)".to_string()
            } else {
                "NULL".to_string()
            }
        ));
    }
    sql
}
