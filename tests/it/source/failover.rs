//! Source failover by GTID against real MariaDB replication (primary → replica with
//! `log_slave_updates`): sdl follows the first server of `source.url` that is a safe continuation
//! of what it relayed, switches on a connection loss, and refuses a replica that is behind or has
//! diverged.

use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::support::replication::Replication;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The harness itself: a write on the primary reaches the replica with the same GTID, a paused
/// replica falls behind and catches up when resumed, and a promoted replica takes writes after
/// the primary is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_harness_replicates_by_gtid() {
    let mut replication = Replication::start().await;
    let mut conn = replication.primary.root_conn().await;
    conn.query_drop("CREATE TABLE app.t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (1), (2)")
        .await
        .unwrap();
    replication.wait_replica_applied(TIMEOUT).await;
    assert_eq!(
        replication.replica.gtid_binlog_pos().await,
        replication.primary.gtid_binlog_pos().await
    );
    let mut replica = replication.replica.root_conn().await;
    let count: Option<i64> = replica
        .query_first("SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(count, Some(2));

    replication.pause().await;
    conn.query_drop("INSERT INTO app.t VALUES (3)")
        .await
        .unwrap();
    assert_ne!(
        replication.replica.gtid_binlog_pos().await,
        replication.primary.gtid_binlog_pos().await
    );
    replication.resume().await;
    replication.wait_replica_applied(TIMEOUT).await;

    drop(conn);
    replication.kill_primary();
    replication.promote_replica().await;
    replica
        .query_drop("INSERT INTO app.t VALUES (4)")
        .await
        .unwrap();
    let count: Option<i64> = replica
        .query_first("SELECT COUNT(*) FROM app.t")
        .await
        .unwrap();
    assert_eq!(count, Some(4));
}
