//! [`Replication`]: a MariaDB primary and a replica in real GTID replication, for tests of source
//! failover (and the soak's "primary failover" fault).
//!
//! - Both are [`MariaDb`] servers with the harness's binlog settings (ROW, FULL images, FULL
//!   metadata), distinct `--server-id`s (primary 1, replica 2), `--log-slave-updates` (the replica's
//!   binlog carries the transactions it applies, so sdl can follow it) and `--gtid-strict-mode`.
//! - At start the replica's data equals the primary's: both were bootstrapped alike (the `sdl`
//!   user, the `app` database), then the replica's binlog is reset to the primary's GTID state, so
//!   both servers' `@@gtid_binlog_state` is the same history, and replication starts with
//!   `MASTER_USE_GTID=slave_pos` from the primary's current position.
//! - [`Replication::wait_replica_applied`] waits until the replica has applied everything the
//!   primary has committed (`MASTER_GTID_WAIT` on the primary's `@@gtid_binlog_pos`).
//! - [`Replication::pause`]/[`Replication::resume`]: `STOP SLAVE`/`START SLAVE` on the replica.
//! - [`Replication::kill_primary`] (SIGKILL) and [`Replication::promote_replica`] (`STOP SLAVE;
//!   RESET SLAVE ALL; SET GLOBAL read_only = 0`): a failover as an operator or orchestrator does it.
//! - [`Replication::rejoin_killed_primary`]: after such a failover the roles swap and the killed
//!   server comes back as a replica of the new primary (the soak fails over again and again).

use std::time::Duration;

use mysql_async::prelude::Queryable;

use super::{MariaDb, SDL_PASSWORD, SDL_USER};

/// The arguments every server of the pair gets besides its `--server-id`.
const REPLICATION_ARGS: [&str; 2] = ["--log-slave-updates", "--gtid-strict-mode=1"];

/// A primary and a replica replicating from it by GTID.
pub struct Replication {
    pub primary: MariaDb,
    pub replica: MariaDb,
}

impl Replication {
    /// Starts both servers and replication; returns once the replica's SQL and IO threads run.
    pub async fn start() -> Self {
        Self::start_with_args(&[], &[]).await
    }

    /// Like [`Replication::start`], with `args` added to both servers' (e.g.
    /// `--max-allowed-packet=64M`).
    pub async fn start_with(args: &[&str]) -> Self {
        Self::start_with_args(args, &[]).await
    }

    /// [`Replication::start`], the replica started with `extra` arguments besides (and
    /// overriding) the standard ones, e.g. `--skip-log-slave-updates`.
    pub async fn start_with_replica_args(extra: &[&str]) -> Self {
        Self::start_with_args(&[], extra).await
    }

    async fn start_with_args(args: &[&str], extra: &[&str]) -> Self {
        let primary_args: Vec<&str> = REPLICATION_ARGS
            .iter()
            .copied()
            .chain(args.iter().copied())
            .chain(["--server-id=1"])
            .collect();
        let replica_args: Vec<&str> = REPLICATION_ARGS
            .iter()
            .copied()
            .chain(args.iter().copied())
            .chain(["--server-id=2"])
            .chain(extra.iter().copied())
            .collect();
        let (primary, replica) = tokio::join!(
            MariaDb::start_with(&primary_args),
            MariaDb::start_with(&replica_args)
        );
        let state = query_string(&primary, "SELECT @@GLOBAL.gtid_binlog_state").await;
        let position = primary.gtid_binlog_pos().await;
        let mut conn = replica.root_conn().await;
        // The replica's own bootstrap transactions (the same user and database as the primary's)
        // are replaced by the primary's history: one history on both servers from here on.
        for statement in [
            "RESET MASTER".to_string(),
            format!("SET GLOBAL gtid_binlog_state = '{state}'"),
            format!("SET GLOBAL gtid_slave_pos = '{position}'"),
            format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
                 MASTER_USER = '{SDL_USER}', MASTER_PASSWORD = '{SDL_PASSWORD}', \
                 MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                primary.port
            ),
            "SET GLOBAL read_only = 1".to_string(),
            "START SLAVE".to_string(),
        ] {
            conn.query_drop(&statement)
                .await
                .unwrap_or_else(|e| panic!("replica: {statement}: {e}"));
        }
        conn.disconnect().await.unwrap();
        let replication = Self { primary, replica };
        replication.wait_running().await;
        replication
    }

    /// Waits until the replica has applied every transaction the primary has committed so far.
    pub async fn wait_replica_applied(&self, timeout: Duration) {
        let position = self.primary.gtid_binlog_pos().await;
        self.wait_replica_at(&position, timeout).await;
    }

    /// Waits until the replica has applied the GTID position `position`.
    pub async fn wait_replica_at(&self, position: &str, timeout: Duration) {
        let mut conn = self.replica.root_conn().await;
        let result: Option<i64> = conn
            .exec_first(
                "SELECT MASTER_GTID_WAIT(?, ?)",
                (position, timeout.as_secs_f64()),
            )
            .await
            .unwrap();
        conn.disconnect().await.unwrap();
        assert_eq!(
            result,
            Some(0),
            "the replica did not apply {position} within {timeout:?} (it is at {})",
            self.replica.gtid_binlog_pos().await
        );
    }

    /// Stops replication (`STOP SLAVE`): the replica falls behind as the primary commits.
    pub async fn pause(&self) {
        self.replica_statement("STOP SLAVE").await;
    }

    /// Restarts replication (`START SLAVE`) and waits for both threads to run.
    pub async fn resume(&self) {
        self.replica_statement("START SLAVE").await;
        self.wait_running().await;
    }

    /// SIGKILLs the primary: no shutdown, no goodbye to its clients or the replica.
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Makes the replica a primary: replication stopped and forgotten, writes allowed.
    pub async fn promote_replica(&self) {
        for statement in ["STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"] {
            self.replica_statement(statement).await;
        }
    }

    /// After [`Replication::kill_primary`] and [`Replication::promote_replica`]: the roles swap
    /// (the promoted replica is `primary` from here on) and the killed server restarts from its
    /// datadir (crash recovery) as a replica of it, from its own last binlog position
    /// (`gtid_slave_pos = gtid_binlog_pos`, `MASTER_USE_GTID = slave_pos`, read-only), so a later
    /// failover is possible again. Returns once both replication threads run. Lossless only when
    /// the killed primary had nothing the replica lacked (see [`Replication::wait_replica_applied`]):
    /// otherwise strict GTID mode stops its replication with an error, which this reports.
    pub async fn rejoin_killed_primary(&mut self) {
        std::mem::swap(&mut self.primary, &mut self.replica);
        self.replica.restart().await;
        let mut conn = self.replica.root_conn().await;
        for statement in [
            "SET GLOBAL read_only = 1".to_string(),
            "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos".to_string(),
            format!(
                "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
                 MASTER_USER = '{SDL_USER}', MASTER_PASSWORD = '{SDL_PASSWORD}', \
                 MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                self.primary.port
            ),
            "START SLAVE".to_string(),
        ] {
            conn.query_drop(&statement)
                .await
                .unwrap_or_else(|e| panic!("old primary rejoining as a replica: {statement}: {e}"));
        }
        conn.disconnect().await.unwrap();
        self.wait_running().await;
    }

    async fn replica_statement(&self, statement: &str) {
        let mut conn = self.replica.root_conn().await;
        conn.query_drop(statement)
            .await
            .unwrap_or_else(|e| panic!("replica: {statement}: {e}"));
        conn.disconnect().await.unwrap();
    }

    /// Waits until `SHOW SLAVE STATUS` says both replication threads run (or panics with the
    /// replica's last error).
    async fn wait_running(&self) {
        let mut conn = self.replica.root_conn().await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status: Option<mysql_async::Row> =
                conn.query_first("SHOW SLAVE STATUS").await.unwrap();
            let status = status.expect("SHOW SLAVE STATUS is empty: replication not configured");
            let io: String = status.get("Slave_IO_Running").unwrap();
            let sql: String = status.get("Slave_SQL_Running").unwrap();
            if io == "Yes" && sql == "Yes" {
                break;
            }
            let io_error: String = status.get("Last_IO_Error").unwrap_or_default();
            let sql_error: String = status.get("Last_SQL_Error").unwrap_or_default();
            assert!(
                std::time::Instant::now() < deadline,
                "replication did not start: IO {io} ({io_error}), SQL {sql} ({sql_error})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        conn.disconnect().await.unwrap();
    }
}

/// The first column of the first row of `query` as text (empty when NULL).
async fn query_string(server: &MariaDb, query: &str) -> String {
    let mut conn = server.root_conn().await;
    let value: Option<Option<String>> = conn.query_first(query).await.unwrap();
    conn.disconnect().await.unwrap();
    value.flatten().unwrap_or_default()
}

/// Every change document of the test's database in source commit order across a failover: by
/// the GTID's domain and sequence number (which a promoted replica continues), then the row.
/// Binlog file:position, which [`super::change_documents`] orders by, are coordinates on one
/// server only.
pub async fn documents_in_gtid_order(mongo: &super::Mongo) -> Vec<mongodb::bson::Document> {
    let mut docs = super::change_documents(mongo).await;
    docs.sort_by_key(|d| {
        let meta = d.get_document("meta").unwrap();
        let gtid = meta.get_str("gtid").unwrap();
        let fields: Vec<u64> = gtid.split('-').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 3, "not a MariaDB GTID: {gtid}");
        (fields[0], fields[2], meta.get_i64("row").unwrap())
    });
    docs
}
